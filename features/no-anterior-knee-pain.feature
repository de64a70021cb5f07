Feature: Hip weakness or hyperextension without anterior knee pain
  The suggestions are for anterior knee pain; the same findings without it give no cards.

  Background:
    Given a 35-year-old male patient
    And the left seated hip-flexion strength above 90° is 4/5
    And the left knee hyperextends 6°

  Scenario: Pain in the hip only
    Given the patient reports left pain in the hip scoring 3/10
    When the clinician opens the chart
    Then the service shows no cards
    And the finding no-anterior-knee-pain is made for the left side

  Scenario: No pain recorded at all
    When the clinician opens the chart
    Then the service shows no cards
    And the finding impairment is made for the left side

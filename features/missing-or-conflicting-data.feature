Feature: Missing, conflicting or one-sided data
  The service says when the data are missing or contradict each other, instead of guessing.

  Background:
    Given a 35-year-old female patient
    And the patient reports right pain behind the kneecap scoring 6/10

  Scenario: Pain and hyperextension but no hip test suggest the test
    Given the right knee hyperextends 8°
    When the clinician opens the chart
    Then the service suggests hip-flexion test for the right knee
    And the hip-flexion test card says "seated hip-flexion test above 90°"
    And the finding hip-data-missing is made for the right side

  Scenario: Manual test weak but dynamometer symmetric suggests a retest
    Given the right seated hip-flexion strength above 90° is 4/5
    And the left hip-flexion force above 90° is 200 N
    And the right hip-flexion force above 90° is 196 N
    When the clinician opens the chart
    Then the service suggests dynamometer retest for the right knee
    And the service does not suggest hip-flexor strengthening
    And the dynamometer retest card rests on rule D6-symmetric

  Scenario: Manual test weak on the right, dynamometer weaker on the left
    Given the right seated hip-flexion strength above 90° is 4/5
    And the left hip-flexion force above 90° is 160 N
    And the right hip-flexion force above 90° is 200 N
    When the clinician opens the chart
    Then the service suggests dynamometer retest for the right knee
    And the dynamometer retest card rests on rule D6-opposite

  Scenario: Pain on the right, weakness only on the left
    Given the left seated hip-flexion strength above 90° is 4/5
    And the right seated hip-flexion strength above 90° is 5/5
    When the clinician opens the chart
    Then the service shows no cards
    And the finding side-mismatch is made for the right side

  Scenario: Pain with normal hip and knee findings
    Given the right seated hip-flexion strength above 90° is 5/5
    And the right knee hyperextends 2°
    When the clinician opens the chart
    Then the service shows no cards
    And the finding tested-normal is made for the right side

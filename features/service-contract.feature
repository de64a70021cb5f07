@service
Feature: The same advice through the CDS Hooks service
  These scenarios run through the HTTP service exactly as an EHR calls it, and every answer is
  checked against the CDS Hooks 2.0 response rules.

  Background:
    Given a 24-year-old female patient
    And the patient reports right pain around the kneecap scoring 5/10
    And the right seated hip-flexion strength above 90° is 4/5
    And the right knee hyperextends 8°

  Scenario: Opening the chart
    When the clinician opens the chart
    Then the service shows 2 cards
    And the service suggests hip-flexor strengthening for the right knee
    And the service suggests patellar glides for the right knee
    And the patellar glides card offers a physiotherapy referral

  Scenario: Starting the encounter
    When the clinician starts the encounter
    Then the service suggests hip-flexor strengthening for the right knee

  Scenario: Selecting a physiotherapy referral for the knee
    When the clinician selects a physiotherapy referral for the knee
    Then the service suggests hip-flexor strengthening for the right knee
    And the hip-flexor strengthening card offers no referral

  Scenario: A patient-facing app
    Given the chart is opened by the patient themselves
    When the clinician opens the chart
    Then the service shows no cards

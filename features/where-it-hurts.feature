Feature: Where it hurts, as real EHRs record it
  The side of the pain may sit in a body-site extension, in the pain site's own coding, or nowhere.
  A side that cannot be read is asked for, never taken as "no knee pain"; a pain score of 0/10 is
  no current pain.

  Background:
    Given a 24-year-old female patient
    And the right seated hip-flexion strength above 90° is 4/5

  Scenario: The side written inside the pain site gives the same cards as a body-site side
    Given the patient reports right pain around the kneecap with the side written in the pain site
    When the clinician opens the chart
    Then the service suggests hip-flexor strengthening for the right knee

  Scenario: Pain at the kneecap with no side recorded asks for the side
    Given the patient reports pain around the kneecap scoring 6/10 with no side recorded
    When the clinician opens the chart
    Then the service suggests a side check
    And the service does not suggest hip-flexor strengthening
    And the side check card rests on rule R13

  Scenario Outline: A pain score below 1/10 is not current pain
    Given the patient reports right pain around the kneecap scoring <score>/10
    When the clinician opens the chart
    Then the service <verdict>

    Examples:
      | score | verdict                                              |
      | 0     | does not suggest hip-flexor strengthening            |
      | 1     | suggests hip-flexor strengthening for the right knee |

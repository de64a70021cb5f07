Feature: Knee red flags withhold exercise suggestions
  A recorded red flag (recent trauma, effusion, a hot swollen knee, locking or instability,
  systemic features, neurovascular compromise, recent knee surgery) replaces the exercise cards
  with a warning to assess and refer.

  Background:
    Given a 28-year-old female patient
    And the right seated hip-flexion strength above 90° is 4/5
    And the right knee hyperextends 7°

  Scenario: Recent trauma with anterior knee pain
    Given the patient reports right pain around the kneecap scoring 7/10
    And the record shows recent knee trauma 10 days ago
    When the clinician opens the chart
    Then the service suggests a red-flag assessment
    And the red-flag assessment card is marked warning
    And the red-flag assessment card rests on rule R2-pain
    And the service does not suggest hip-flexor strengthening
    And the service does not suggest patellar glides

  Scenario: A red flag with weakness but no knee pain still warns
    Given the record shows knee effusion or haemarthrosis 3 days ago
    When the clinician opens the chart
    Then the service suggests a red-flag assessment
    And the red-flag assessment card rests on rule R2-impairment

  Scenario Outline: Trauma counts for 42 days, knee surgery for 6 months
    Given the patient reports right pain around the kneecap scoring 7/10
    And the record shows <flag> <days> days ago
    When the clinician opens the chart
    Then the service <verdict>

    Examples:
      | flag                         | days | verdict                                                    |
      | recent knee trauma           | 42   | suggests a red-flag assessment                             |
      | recent knee trauma           | 43   | suggests hip-flexor strengthening for the right knee       |
      | knee surgery within 6 months | 183  | suggests a red-flag assessment                             |
      | knee surgery within 6 months | 184  | suggests hip-flexor strengthening for the right knee       |

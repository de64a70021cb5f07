Feature: End-range hip-flexor strengthening for anterior knee pain
  Weak hip flexion above 90° (where the iliopsoas is the flexor that still works) with anterior
  knee pain on the same side leads to a suggestion of psoas-focused strengthening.

  Background:
    Given a 24-year-old female patient
    And the patient reports right pain around the kneecap scoring 5/10

  Scenario: Weak above 90° but normal at standard range on the painful side
    Given the right seated hip-flexion strength above 90° is 4/5
    And the right seated hip-flexion strength up to 90° is 5/5
    When the clinician opens the chart
    Then the service suggests hip-flexor strengthening for the right knee
    And the hip-flexor strengthening card offers a physiotherapy referral
    And the hip-flexor strengthening card says "expert opinion"
    And the hip-flexor strengthening card says "back against a wall"
    And the hip-flexor strengthening card rests on rule R3
    And the finding selective-end-range-pattern is made for the right side

  Scenario: Weak above 90° without a standard-range test says the pattern is unknown
    Given the right seated hip-flexion strength above 90° is 4/5
    When the clinician opens the chart
    Then the service suggests hip-flexor strengthening for the right knee
    And the hip-flexor strengthening card says "standard-range (≤ 90°) test not recorded"
    And the finding selective-end-range-pattern is not made

  Scenario Outline: Manual grades at or below 4+ count as weak
    Given the right seated hip-flexion strength above 90° is <grade>/5
    When the clinician opens the chart
    Then the service suggests hip-flexor strengthening for the right knee

    Examples:
      | grade |
      | 3     |
      | 4-    |
      | 4     |
      | 4+    |

  Scenario Outline: Manual grades of 5- and 5 do not count as weak
    Given the right seated hip-flexion strength above 90° is <grade>/5
    When the clinician opens the chart
    Then the service does not suggest hip-flexor strengthening
    And the finding <finding> is made

    Examples:
      | grade | finding                         |
      | 5-    | borderline-hip-flexion-strength |
      | 5     | tested-normal                   |

  Scenario Outline: A dynamometer deficit of 15 % or more counts as weak
    Given the patient reports left pain behind the kneecap scoring 4/10
    And the left hip-flexion force above 90° is <left> N
    And the right hip-flexion force above 90° is 100 N
    When the clinician opens the chart
    Then the service <verdict>
    And the finding <finding> is made for the left side

    Examples:
      | left | verdict                                                   | finding                         |
      | 85   | suggests hip-flexor strengthening for the left knee       | end-range-hip-flexion-weakness  |
      | 85.1 | does not suggest hip-flexor strengthening                 | borderline-hip-flexion-strength |
      | 90   | does not suggest hip-flexor strengthening                 | borderline-hip-flexion-strength |

  Scenario: Both sides weak and painful give one card for both knees
    Given the patient reports left pain at the front of the knee scoring 5/10
    And the left seated hip-flexion strength above 90° is 4/5
    And the right seated hip-flexion strength above 90° is 4-/5
    When the clinician opens the chart
    Then the service suggests hip-flexor strengthening for both knees
    And the service shows 1 cards
    And the hip-flexor strengthening card rests on rule R10

  Scenario: A patellofemoral pain diagnosis counts as anterior knee pain
    Given the left knee has a diagnosis of patellofemoral pain
    And the left seated hip-flexion strength above 90° is 4/5
    When the clinician opens the chart
    Then the service suggests hip-flexor strengthening for the left knee

  Scenario: An active physiotherapy referral gets the advice without a second referral
    Given the right seated hip-flexion strength above 90° is 4/5
    And the patient already has an active physiotherapy referral
    When the clinician opens the chart
    Then the service suggests hip-flexor strengthening for the right knee
    And the hip-flexor strengthening card offers no referral
    And the hip-flexor strengthening card says "An active physiotherapy referral exists"

  Rule: The card says only what the data show

    Scenario: A manual grade alone suggests confirming it with a dynamometer
      Given the right seated hip-flexion strength above 90° is 4+/5
      When the clinician opens the chart
      Then the hip-flexor strengthening card says "manual grade only; a hand-held dynamometer would confirm it"
      And the hip-flexor strengthening card says "4+/5"

    Scenario: A dynamometer deficit shows the forces, not only the percentage
      Given the patient reports left pain behind the kneecap scoring 4/10
      And the left hip-flexion force above 90° is 80 N
      And the right hip-flexion force above 90° is 100 N
      When the clinician opens the chart
      Then the hip-flexor strengthening card says "left side 20.0 % weaker (80 N against 100 N)"

    Scenario: No knee hyperextension recorded means no "unlock your knees" cue
      Given the right seated hip-flexion strength above 90° is 4/5
      When the clinician opens the chart
      Then the service suggests hip-flexor strengthening for the right knee
      And the service does not suggest patellar glides

    Scenario Outline: Under 18, hip causes are to be excluded first
      Given a <age>-year-old male patient
      And the right seated hip-flexion strength above 90° is 4/5
      When the clinician opens the chart
      Then the hip-flexor strengthening card <says> "exclude hip causes (e.g. slipped capital femoral epiphysis) first"

      Examples:
        | age | says          |
        | 16  | says          |
        | 17  | says          |
        | 18  | does not say  |

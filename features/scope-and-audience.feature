Feature: Who the suggestions are for
  Exercise suggestions are for clinicians treating patients aged 16 to 59; patient-facing apps
  and patients outside that age range get no cards.

  Background:
    Given the patient reports right pain around the kneecap scoring 5/10
    And the right seated hip-flexion strength above 90° is 4/5

  Scenario Outline: Ages 16 to 59 are in scope
    Given a <age>-year-old female patient
    When the clinician opens the chart
    Then the service shows <cards> cards

    Examples:
      | age | cards |
      | 15  | 0     |
      | 16  | 1     |
      | 59  | 1     |
      | 60  | 0     |

  Scenario: Out of scope by age is recorded as a finding, not a card
    Given a 72-year-old male patient
    When the clinician opens the chart
    Then the service shows no cards
    And the finding withheld-age-out-of-scope is made

  Scenario: A patient-facing app gets no cards
    Given a 30-year-old female patient
    And the chart is opened by the patient themselves
    When the clinician opens the chart
    Then the service shows no cards
    And the finding withheld-patient-facing is made

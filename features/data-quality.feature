Feature: Old or unusable data are not used
  Observations older than 90 days are not used, and the service says so.

  Background:
    Given a 40-year-old female patient
    And the patient reports left pain around the kneecap scoring 5/10
    And the left seated hip-flexion strength above 90° is 4/5

  Scenario Outline: Observations up to 90 days old are used
    Given the measurements were taken <days> days ago
    When the clinician opens the chart
    Then the service shows <cards> cards

    Examples:
      | days | cards |
      | 90   | 1     |
      | 91   | 0     |

  Scenario: Stale observations are reported as data issues
    Given the measurements were taken 120 days ago
    When the clinician opens the chart
    Then the data issue stale is reported

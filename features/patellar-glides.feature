Feature: Inferior patellar glides for short-term relief
  When the knee locks back into hyperextension on the side of the strengthening card, inferior
  patellar glides and the cue "unlock your knees" are suggested as an add-on.

  Background:
    Given a 31-year-old male patient
    And the patient reports left pain at the front of the knee scoring 6/10
    And the left seated hip-flexion strength above 90° is 4/5

  Scenario Outline: Hyperextension of 5° or more adds patellar glides
    Given the left knee hyperextends <degrees>°
    When the clinician opens the chart
    Then the service suggests hip-flexor strengthening for the left knee
    And the service <verdict>

    Examples:
      | degrees | verdict                                         |
      | 4       | does not suggest patellar glides                |
      | 5       | suggests patellar glides for the left knee      |
      | 8       | suggests patellar glides for the left knee      |

  Scenario: Marked hyperextension beyond 10° is named as such
    Given the left knee hyperextends 12°
    When the clinician opens the chart
    Then the service suggests patellar glides for the left knee
    And the finding marked-knee-hyperextension is made for the left side
    And the patellar glides card rests on rule R4

  Scenario: Hyperextension seen only when walking also counts
    Given the left knee locks back into hyperextension when walking
    When the clinician opens the chart
    Then the service suggests patellar glides for the left knee
    And the patellar glides card says "unlock your knees"

  Scenario: Hyperextension on the other side only adds nothing
    Given the right knee hyperextends 9°
    When the clinician opens the chart
    Then the service suggests hip-flexor strengthening for the left knee
    And the service does not suggest patellar glides

  Scenario Outline: Marked hyperextension asks for a hypermobility and instability screen first
    Given the left knee hyperextends <degrees>°
    When the clinician opens the chart
    Then the patellar glides card <says> "screen for hypermobility (Beighton) and patellar instability"

    Examples:
      | degrees | says         |
      | 10      | does not say |
      | 11      | says         |

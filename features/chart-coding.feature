Feature: Suggest only what is understood
  Every condition, procedure, examination finding and medicine in the chart is read before anything is
  suggested: a red flag gives the red-flag card, a knee record the rules cannot classify (or cannot read at
  all) gives a card that names it and asks to check it first, and only a chart whose knee records are all
  understood gets exercise suggestions. "No red flag" is said only when every record was read.

  Background:
    Given a 28-year-old female patient
    And the right seated hip-flexion strength above 90° is 4/5
    And the right knee hyperextends 7°
    And the patient reports right pain around the kneecap scoring 7/10

  Scenario: A chart whose records are all understood gets the suggestions and says what was checked
    Given the record has the ICD-10-CM diagnosis M25.561 from 30 days ago
    And the patient takes paracetamol
    When the clinician opens the chart
    Then the service suggests hip-flexor strengthening for the right knee
    And the hip-flexor strengthening card says "No red flag in 1 condition, 1 medicine."

  Scenario Outline: A red flag found on examination withholds the exercise cards
    Given the right knee examination finds <finding>
    When the clinician opens the chart
    Then the service <verdict>

    Examples:
      | finding      | verdict                                              |
      | an effusion  | suggests a red-flag assessment                       |
      | giving way   | suggests a red-flag assessment                       |
      | no effusion  | suggests hip-flexor strengthening for the right knee |

  Scenario Outline: Red flags are read in every code system EHRs send
    Given the record has the <system> <record> <code> from <days> days ago
    When the clinician opens the chart
    Then the service suggests a red-flag assessment
    And the service does not suggest hip-flexor strengthening

    Examples:
      | system       | record    | code    | days | what                                       |
      | ICD-10 (WHO) | diagnosis | M25.46  | 6    | effusion of the knee                       |
      | ICD-10 (WHO) | diagnosis | S83.2   | 6    | meniscus tear                              |
      | ICD-10-PCS   | procedure | 0SRC0J9 | 75   | right total knee replacement               |
      | OPCS-4       | procedure | W40.1   | 75   | total knee replacement (cemented)          |
      | ICD-10-CM    | diagnosis | M22.01  | 200  | recurrent dislocation of the right patella |
      | ICD-10-CM    | diagnosis | Z96.651 | 900  | right artificial knee joint                |
      | ICD-10-CM    | diagnosis | M00.9   | 5    | pyogenic arthritis, site unspecified       |

  Scenario: An encounter diagnosis without a clinical status counts within its window
    Given the record has the ICD-10-CM encounter diagnosis M25.461 from 6 days ago
    When the clinician opens the chart
    Then the service suggests a red-flag assessment

  Scenario Outline: Fever at or above 38 °C with a knee complaint is a red flag
    Given the body temperature is <celsius> °C
    When the clinician opens the chart
    Then the service <verdict>

    Examples:
      | celsius | verdict                                              |
      | 38.0    | suggests a red-flag assessment                       |
      | 37.9    | suggests hip-flexor strengthening for the right knee |

  Scenario: A swollen knee in an anticoagulated patient may be a haemarthrosis
    Given the right knee examination finds swelling
    And the patient takes apixaban
    When the clinician opens the chart
    Then the service suggests a red-flag assessment
    And the red-flag assessment card says "possible haemarthrosis"

  Scenario: An effusion in an anticoagulated patient is worded as a possible haemarthrosis
    Given the right knee examination finds an effusion
    And the patient takes warfarin
    When the clinician opens the chart
    Then the service suggests a red-flag assessment
    And the finding possible-haemarthrosis is made

  Scenario: A swollen knee without an anticoagulant is not a red flag on its own
    Given the right knee examination finds swelling
    When the clinician opens the chart
    Then the service suggests hip-flexor strengthening for the right knee

  Scenario: A knee record in a code system the rules cannot read is named, and nothing is suggested
    Given the record has a procedure “Arthroscopic washout” coded 1234 in urn:oid:1.2.3.4
    When the clinician opens the chart
    Then the service suggests a check of the knee records
    And the check of the knee records card says "Arthroscopic washout"
    And the check of the knee records card does not say "No red flag"
    And the data issue unreadable-record is reported

  Scenario: Osteoarthritis of the knee is about the knee but not understood: check it first
    Given the record has the ICD-10-CM diagnosis M17.11 from 300 days ago
    When the clinician opens the chart
    Then the service suggests a check of the knee records
    And the service does not suggest patellar glides

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

  Rule: Red flags are recognised in the codes EHRs use, not only in the service's own

    Scenario Outline: A red flag coded in ICD-10-CM or SNOMED CT withholds the exercise cards
      Given the patient reports right pain around the kneecap scoring 7/10
      And the record has the <system> diagnosis <code> from <days> days ago
      When the clinician opens the chart
      Then the service suggests a red-flag assessment
      And the service does not suggest hip-flexor strengthening

      Examples:
        | system    | code      | days | what                                    |
        | ICD-10-CM | M25.461   | 400  | effusion, right knee                    |
        | ICD-10-CM | M25.061   | 400  | haemarthrosis, right knee               |
        | ICD-10-CM | S80.01XA  | 3    | contusion of right knee                 |
        | ICD-10-CM | S83.004A  | 3    | patellar dislocation                    |
        | ICD-10-CM | S82.001A  | 3    | fracture of right patella               |
        | ICD-10-CM | S83.241A  | 3    | meniscus tear, current injury           |
        | ICD-10-CM | S83.511A  | 3    | cruciate ligament sprain                |
        | ICD-10-CM | M00.061   | 400  | staphylococcal arthritis, right knee    |
        | ICD-10-CM | M10.061   | 400  | gout, right knee                        |
        | ICD-10-CM | C40.21    | 400  | bone malignancy, right lower limb       |
        | ICD-10-CM | Z85.3     | 400  | history of malignancy                   |
        | ICD-10-CM | R63.4     | 10   | abnormal weight loss                    |
        | SNOMED CT | 125601008 | 3    | injury of knee                          |

    Scenario Outline: Knee surgery coded by CPT or SNOMED CT, without a body site, withholds the exercise cards
      Given the patient reports right pain around the kneecap scoring 7/10
      And the record has the <system> procedure <code> from 60 days ago
      When the clinician opens the chart
      Then the service suggests a red-flag assessment

      Examples:
        | system    | code      |
        | CPT       | 29881     |
        | CPT       | 27447     |
        | SNOMED CT | 309431009 |

    Scenario: A knee record that is neither a red flag nor known to be compatible holds back every suggestion
      Given the patient reports right pain around the kneecap scoring 7/10
      And the record has the ICD-10-CM diagnosis S86.011A from 5 days ago
      When the clinician opens the chart
      Then the service suggests a check of the knee records
      And the check of the knee records card says "To check: Condition"
      And the check of the knee records card says "ICD-10-CM S86.011A"
      And the check of the knee records card offers no referral
      And the service does not suggest hip-flexor strengthening
      And the data issue unknown-knee-record is reported

//! The code tables the generator draws from: real codes of LOINC, SNOMED CT, RxNorm and
//! CVX with their displays, UCUM units, and the HL7 code systems of the elements whose
//! bindings are required. Kept small on purpose: every row is a fact of its code system,
//! checked by the tests (LOINC check digits, SNOMED CT Verhoeff digits, UCUM syntax).

/// A code of a code system with its display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub system: &'static str,
    pub code: &'static str,
    pub display: &'static str,
}

pub const LOINC: &str = "http://loinc.org";
pub const SNOMED: &str = "http://snomed.info/sct";
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
pub const CVX: &str = "http://hl7.org/fhir/sid/cvx";
pub const UCUM: &str = "http://unitsofmeasure.org";
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
pub const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
pub const INTERPRETATION: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
pub const CONDITION_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
pub const CONDITION_VERIFICATION: &str =
    "http://terminology.hl7.org/CodeSystem/condition-ver-status";
pub const CONDITION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/condition-category";
pub const ALLERGY_CLINICAL: &str =
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
pub const ALLERGY_VERIFICATION: &str =
    "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";
pub const DIAGNOSTIC_SERVICE: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";
pub const CLAIM_TYPE: &str = "http://terminology.hl7.org/CodeSystem/claim-type";
pub const PROCESS_PRIORITY: &str = "http://terminology.hl7.org/CodeSystem/processpriority";
pub const SUBSCRIBER_RELATIONSHIP: &str =
    "http://terminology.hl7.org/CodeSystem/subscriber-relationship";

const fn loinc(code: &'static str, display: &'static str) -> Code {
    Code {
        system: LOINC,
        code,
        display,
    }
}

const fn sct(code: &'static str, display: &'static str) -> Code {
    Code {
        system: SNOMED,
        code,
        display,
    }
}

const fn rx(code: &'static str, display: &'static str) -> Code {
    Code {
        system: RXNORM,
        code,
        display,
    }
}

const fn cvx(code: &'static str, display: &'static str) -> Code {
    Code {
        system: CVX,
        code,
        display,
    }
}

const fn act(code: &'static str, display: &'static str) -> Code {
    Code {
        system: ACT_CODE,
        code,
        display,
    }
}

/// The participation types of an encounter's participants (v3 ParticipationType).
pub const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";

// Encounter classes (v3 ActCode, the R4 binding of Encounter.class).
pub const AMBULATORY: Code = act("AMB", "ambulatory");
pub const INPATIENT: Code = act("IMP", "inpatient encounter");
pub const EMERGENCY: Code = act("EMER", "emergency");
pub const VIRTUAL: Code = act("VR", "virtual");
pub const HOME_HEALTH: Code = act("HH", "home health");

// Encounter types (SNOMED CT).
pub const CHECK_UP: Code = sct("185349003", "Encounter for check up");
pub const WELL_CHILD: Code = sct("410620009", "Well child visit");
pub const PROBLEM_VISIT: Code = sct("185347001", "Encounter for problem");
pub const FOLLOW_UP: Code = sct("390906007", "Follow-up encounter");
pub const TELEMEDICINE: Code = sct("448337001", "Telemedicine consultation with patient");
pub const ER_ADMISSION: Code = sct("50849002", "Emergency room admission");
pub const HOSPITAL_ADMISSION: Code = sct("32485007", "Hospital admission");
pub const HOME_VISIT: Code = sct("439708006", "Home visit");

/// A quantity the generator measures: its code, UCUM unit, and the digits after the
/// decimal point it is recorded with.
#[derive(Debug, Clone, Copy)]
pub struct Measure {
    pub code: Code,
    pub unit: &'static str,
    pub decimals: u32,
}

const fn measure(code: Code, unit: &'static str, decimals: u32) -> Measure {
    Measure {
        code,
        unit,
        decimals,
    }
}

// Vital signs (the codes of the FHIR vital signs profile).
pub const HEIGHT: Measure = measure(loinc("8302-2", "Body height"), "cm", 1);
pub const WEIGHT: Measure = measure(loinc("29463-7", "Body weight"), "kg", 1);
pub const BMI: Measure = measure(
    loinc("39156-5", "Body mass index (BMI) [Ratio]"),
    "kg/m2",
    1,
);
pub const BLOOD_PRESSURE: Code =
    loinc("85354-9", "Blood pressure panel with all children optional");
pub const SYSTOLIC: Measure = measure(loinc("8480-6", "Systolic blood pressure"), "mm[Hg]", 0);
pub const DIASTOLIC: Measure = measure(loinc("8462-4", "Diastolic blood pressure"), "mm[Hg]", 0);
pub const HEART_RATE: Measure = measure(loinc("8867-4", "Heart rate"), "/min", 0);
pub const RESPIRATORY_RATE: Measure = measure(loinc("9279-1", "Respiratory rate"), "/min", 0);
pub const TEMPERATURE: Measure = measure(loinc("8310-5", "Body temperature"), "Cel", 1);
pub const OXYGEN_SATURATION: Measure = measure(
    loinc(
        "59408-5",
        "Oxygen saturation in Arterial blood by Pulse oximetry",
    ),
    "%",
    0,
);
pub const PAIN: Measure = measure(
    loinc(
        "72514-3",
        "Pain severity - 0-10 verbal numeric rating [Score] - Reported",
    ),
    "{score}",
    0,
);

/// A laboratory test with the distribution of its results (in units of its last
/// recorded digit) and its reference range.
#[derive(Debug, Clone, Copy)]
pub struct Lab {
    pub measure: Measure,
    /// Mean and standard deviation of a healthy result, scaled by 10^decimals.
    pub mean: i64,
    pub sd: i64,
    /// The reference range, scaled by 10^decimals.
    pub low: i64,
    pub high: i64,
}

const fn lab(
    code: &'static str,
    display: &'static str,
    unit: &'static str,
    decimals: u32,
    (mean, sd): (i64, i64),
    (low, high): (i64, i64),
) -> Lab {
    Lab {
        measure: measure(loinc(code, display), unit, decimals),
        mean,
        sd,
        low,
        high,
    }
}

pub const HBA1C: Lab = lab(
    "4548-4",
    "Hemoglobin A1c/Hemoglobin.total in Blood",
    "%",
    1,
    (54, 3),
    (40, 56),
);
pub const GLUCOSE: Lab = lab(
    "2339-0",
    "Glucose [Mass/volume] in Blood",
    "mg/dL",
    0,
    (88, 9),
    (70, 99),
);
pub const UREA_NITROGEN: Lab = lab(
    "6299-2",
    "Urea nitrogen [Mass/volume] in Blood",
    "mg/dL",
    0,
    (14, 4),
    (7, 20),
);
pub const CREATININE: Lab = lab(
    "2160-0",
    "Creatinine [Mass/volume] in Serum or Plasma",
    "mg/dL",
    2,
    (90, 15),
    (60, 120),
);
pub const CALCIUM: Lab = lab(
    "17861-6",
    "Calcium [Mass/volume] in Serum or Plasma",
    "mg/dL",
    1,
    (94, 4),
    (86, 103),
);
pub const SODIUM: Lab = lab(
    "2951-2",
    "Sodium [Moles/volume] in Serum or Plasma",
    "mmol/L",
    0,
    (140, 2),
    (135, 145),
);
pub const POTASSIUM: Lab = lab(
    "2823-3",
    "Potassium [Moles/volume] in Serum or Plasma",
    "mmol/L",
    1,
    (42, 3),
    (35, 51),
);
pub const CHLORIDE: Lab = lab(
    "2075-0",
    "Chloride [Moles/volume] in Serum or Plasma",
    "mmol/L",
    0,
    (103, 2),
    (98, 107),
);
pub const CARBON_DIOXIDE: Lab = lab(
    "2028-9",
    "Carbon dioxide, total [Moles/volume] in Serum or Plasma",
    "mmol/L",
    0,
    (26, 2),
    (22, 29),
);
pub const CHOLESTEROL: Lab = lab(
    "2093-3",
    "Cholesterol [Mass/volume] in Serum or Plasma",
    "mg/dL",
    0,
    (185, 25),
    (0, 200),
);
pub const TRIGLYCERIDE: Lab = lab(
    "2571-8",
    "Triglyceride [Mass/volume] in Serum or Plasma",
    "mg/dL",
    0,
    (120, 35),
    (0, 150),
);
pub const HDL: Lab = lab(
    "2085-9",
    "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
    "mg/dL",
    0,
    (55, 10),
    (40, 100),
);
pub const LDL: Lab = lab(
    "18262-6",
    "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay",
    "mg/dL",
    0,
    (105, 22),
    (0, 130),
);
pub const HEMOGLOBIN: Lab = lab(
    "718-7",
    "Hemoglobin [Mass/volume] in Blood",
    "g/dL",
    1,
    (140, 10),
    (120, 170),
);
pub const HEMATOCRIT: Lab = lab(
    "4544-3",
    "Hematocrit [Volume Fraction] of Blood by Automated count",
    "%",
    1,
    (420, 30),
    (360, 500),
);
pub const LEUKOCYTES: Lab = lab(
    "6690-2",
    "Leukocytes [#/volume] in Blood by Automated count",
    "10*3/uL",
    1,
    (70, 15),
    (45, 110),
);
pub const ERYTHROCYTES: Lab = lab(
    "789-8",
    "Erythrocytes [#/volume] in Blood by Automated count",
    "10*6/uL",
    2,
    (480, 40),
    (420, 580),
);
pub const PLATELETS: Lab = lab(
    "777-3",
    "Platelets [#/volume] in Blood by Automated count",
    "10*3/uL",
    0,
    (260, 50),
    (150, 400),
);

/// A laboratory panel: the DiagnosticReport's code and the tests it reports.
#[derive(Debug, Clone, Copy)]
pub struct Panel {
    pub code: Code,
    pub tests: &'static [Lab],
}

pub const BASIC_METABOLIC: Panel = Panel {
    code: loinc("51990-0", "Basic metabolic panel - Blood"),
    tests: &[
        GLUCOSE,
        UREA_NITROGEN,
        CREATININE,
        CALCIUM,
        SODIUM,
        POTASSIUM,
        CHLORIDE,
        CARBON_DIOXIDE,
    ],
};
pub const LIPID: Panel = Panel {
    code: loinc("57698-3", "Lipid panel with direct LDL - Serum or Plasma"),
    tests: &[CHOLESTEROL, TRIGLYCERIDE, HDL, LDL],
};
pub const BLOOD_COUNT: Panel = Panel {
    code: loinc("58410-2", "CBC panel - Blood by Automated count"),
    tests: &[HEMOGLOBIN, HEMATOCRIT, LEUKOCYTES, ERYTHROCYTES, PLATELETS],
};
pub const GLYCATED_HEMOGLOBIN: Panel = Panel {
    code: HBA1C.measure.code,
    tests: &[HBA1C],
};

// Medications (RxNorm clinical drugs) and how they are taken.
#[derive(Debug, Clone, Copy)]
pub struct Medication {
    pub code: Code,
    /// Patient instructions (Dosage.text).
    pub instruction: &'static str,
    /// Doses a day.
    pub per_day: u32,
    /// The dose: value and UCUM unit.
    pub dose: (u32, &'static str),
}

const fn med(
    code: &'static str,
    display: &'static str,
    instruction: &'static str,
    per_day: u32,
    dose: (u32, &'static str),
) -> Medication {
    Medication {
        code: rx(code, display),
        instruction,
        per_day,
        dose,
    }
}

pub const LISINOPRIL: Medication = med(
    "314076",
    "lisinopril 10 MG Oral Tablet",
    "Take one tablet by mouth once a day",
    1,
    (1, "{tbl}"),
);
pub const AMLODIPINE: Medication = med(
    "197361",
    "amlodipine 5 MG Oral Tablet",
    "Take one tablet by mouth once a day",
    1,
    (1, "{tbl}"),
);
pub const HYDROCHLOROTHIAZIDE: Medication = med(
    "310798",
    "Hydrochlorothiazide 25 MG Oral Tablet",
    "Take one tablet by mouth every morning",
    1,
    (1, "{tbl}"),
);
pub const METFORMIN: Medication = med(
    "860975",
    "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
    "Take one tablet by mouth with the evening meal",
    1,
    (1, "{tbl}"),
);
pub const SIMVASTATIN: Medication = med(
    "314231",
    "Simvastatin 10 MG Oral Tablet",
    "Take one tablet by mouth at bedtime",
    1,
    (1, "{tbl}"),
);
pub const ATORVASTATIN: Medication = med(
    "259255",
    "Atorvastatin 80 MG Oral Tablet",
    "Take one tablet by mouth once a day",
    1,
    (1, "{tbl}"),
);
pub const ALBUTEROL: Medication = med(
    "745679",
    "200 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
    "Inhale two puffs every 4 to 6 hours as needed for wheezing",
    4,
    (2, "{puff}"),
);
pub const FLUTICASONE: Medication = med(
    "895994",
    "120 ACTUAT Fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
    "Inhale two puffs twice a day; rinse the mouth after use",
    2,
    (2, "{puff}"),
);
pub const WARFARIN: Medication = med(
    "855332",
    "Warfarin Sodium 5 MG Oral Tablet",
    "Take one tablet by mouth in the evening, as directed by the anticoagulation clinic",
    1,
    (1, "{tbl}"),
);
pub const FUROSEMIDE: Medication = med(
    "313988",
    "Furosemide 40 MG Oral Tablet",
    "Take one tablet by mouth every morning",
    1,
    (1, "{tbl}"),
);
pub const PREDNISONE: Medication = med(
    "312615",
    "predniSONE 20 MG Oral Tablet",
    "Take two tablets by mouth once a day for five days",
    1,
    (2, "{tbl}"),
);
pub const AMOXICILLIN: Medication = med(
    "308182",
    "Amoxicillin 250 MG Oral Capsule",
    "Take two capsules by mouth three times a day for seven days",
    3,
    (2, "{cap}"),
);
pub const PENICILLIN_V: Medication = med(
    "834061",
    "Penicillin V Potassium 250 MG Oral Tablet",
    "Take two tablets by mouth twice a day for ten days",
    2,
    (2, "{tbl}"),
);
pub const ACETAMINOPHEN: Medication = med(
    "313782",
    "Acetaminophen 325 MG Oral Tablet",
    "Take two tablets by mouth every 6 hours as needed for pain or fever",
    4,
    (2, "{tbl}"),
);
pub const IBUPROFEN: Medication = med(
    "310965",
    "Ibuprofen 200 MG Oral Tablet",
    "Take two tablets by mouth every 8 hours with food as needed for pain",
    3,
    (2, "{tbl}"),
);

/// A long-term condition: its code, from what age it appears, how many in a thousand
/// people of that age have it, what treats it, what monitors it, and its care plan.
#[derive(Debug, Clone, Copy)]
pub struct Chronic {
    pub code: Code,
    pub min_age: i64,
    pub per_mille: u32,
    pub medications: &'static [Medication],
    pub panels: &'static [Panel],
    pub care_plan: Option<(Code, &'static [Code])>,
}

pub const HYPERTENSION: Code = sct("59621000", "Essential hypertension");
pub const DIABETES: Code = sct("44054006", "Diabetes mellitus type 2");
pub const ASTHMA: Code = sct("195967001", "Asthma");
pub const PREDIABETES: Code = sct("15777000", "Prediabetes");
pub const HYPERLIPIDEMIA: Code = sct("55822004", "Hyperlipidemia");
pub const COPD: Code = sct("13645005", "Chronic obstructive lung disease");
pub const ATRIAL_FIBRILLATION: Code = sct("49436004", "Atrial fibrillation");
pub const CKD_STAGE_3: Code = sct("433144002", "Chronic kidney disease stage 3");
pub const PNEUMONIA: Code = sct("233604007", "Pneumonia");

pub const CHRONIC: &[Chronic] = &[
    Chronic {
        code: HYPERTENSION,
        min_age: 30,
        per_mille: 300,
        medications: &[LISINOPRIL, AMLODIPINE, HYDROCHLOROTHIAZIDE],
        panels: &[BASIC_METABOLIC],
        care_plan: Some((
            sct("443402002", "Lifestyle education regarding hypertension"),
            &[
                sct("386463000", "Prescribed activity/exercise education"),
                sct("413473000", "Counseling about alcohol consumption"),
            ],
        )),
    },
    Chronic {
        code: DIABETES,
        min_age: 30,
        per_mille: 110,
        medications: &[METFORMIN],
        panels: &[GLYCATED_HEMOGLOBIN, BASIC_METABOLIC],
        care_plan: Some((
            sct("698360004", "Diabetes self management plan"),
            &[
                sct("160670007", "Diabetic diet"),
                sct("229065009", "Exercise therapy"),
            ],
        )),
    },
    Chronic {
        code: HYPERLIPIDEMIA,
        min_age: 35,
        per_mille: 200,
        medications: &[SIMVASTATIN, ATORVASTATIN],
        panels: &[LIPID],
        care_plan: None,
    },
    Chronic {
        code: ASTHMA,
        min_age: 3,
        per_mille: 80,
        medications: &[ALBUTEROL, FLUTICASONE],
        panels: &[],
        care_plan: Some((
            sct("699728000", "Asthma self management"),
            &[sct("710081004", "Smoking cessation therapy")],
        )),
    },
    Chronic {
        code: COPD,
        min_age: 50,
        per_mille: 60,
        medications: &[ALBUTEROL],
        panels: &[BLOOD_COUNT],
        care_plan: None,
    },
    Chronic {
        code: ATRIAL_FIBRILLATION,
        min_age: 55,
        per_mille: 50,
        medications: &[WARFARIN],
        panels: &[BLOOD_COUNT],
        care_plan: None,
    },
    Chronic {
        code: CKD_STAGE_3,
        min_age: 50,
        per_mille: 60,
        medications: &[FUROSEMIDE],
        panels: &[BASIC_METABOLIC],
        care_plan: None,
    },
    Chronic {
        code: sct("35489007", "Depressive disorder"),
        min_age: 14,
        per_mille: 70,
        medications: &[],
        panels: &[],
        care_plan: None,
    },
    Chronic {
        code: sct("396275006", "Osteoarthritis"),
        min_age: 45,
        per_mille: 150,
        medications: &[ACETAMINOPHEN],
        panels: &[],
        care_plan: None,
    },
    Chronic {
        code: PREDIABETES,
        min_age: 25,
        per_mille: 90,
        medications: &[],
        panels: &[GLYCATED_HEMOGLOBIN],
        care_plan: None,
    },
];

/// An acute problem: diagnosed at a visit of `class`, over in `days`, with what is done
/// for it.
#[derive(Debug, Clone, Copy)]
pub struct Acute {
    pub code: Code,
    pub class: Code,
    pub visit: Code,
    pub days: (i64, i64),
    pub medications: &'static [Medication],
    pub procedures: &'static [Code],
    /// Days in hospital, for an inpatient stay.
    pub stay: (i64, i64),
    /// Whether it comes with a fever (an infection, not an injury).
    pub fever: bool,
}

pub const CHEST_X_RAY: Code = sct("399208008", "Plain chest X-ray");
pub const ELECTROCARDIOGRAM: Code = sct("29303009", "Electrocardiographic procedure");
pub const COLONOSCOPY: Code = sct("73761001", "Colonoscopy");
pub const MAMMOGRAPHY: Code = sct("71651007", "Mammography");
pub const DEPRESSION_SCREENING: Code = sct("171207006", "Depression screening");
pub const MEDICATION_RECONCILIATION: Code = sct("430193006", "Medication reconciliation");
pub const SPIROMETRY: Code = sct("127783003", "Spirometry");

pub const ACUTE: &[(u32, Acute)] = &[
    (
        30,
        Acute {
            code: sct("444814009", "Viral sinusitis"),
            class: AMBULATORY,
            visit: PROBLEM_VISIT,
            days: (7, 21),
            medications: &[],
            procedures: &[],
            stay: (0, 0),
            fever: true,
        },
    ),
    (
        20,
        Acute {
            code: sct("195662009", "Acute viral pharyngitis"),
            class: AMBULATORY,
            visit: PROBLEM_VISIT,
            days: (5, 10),
            medications: &[ACETAMINOPHEN],
            procedures: &[],
            stay: (0, 0),
            fever: true,
        },
    ),
    (
        15,
        Acute {
            code: sct("10509002", "Acute bronchitis"),
            class: AMBULATORY,
            visit: PROBLEM_VISIT,
            days: (7, 21),
            medications: &[ACETAMINOPHEN],
            procedures: &[],
            stay: (0, 0),
            fever: true,
        },
    ),
    (
        8,
        Acute {
            code: sct("43878008", "Streptococcal sore throat"),
            class: AMBULATORY,
            visit: PROBLEM_VISIT,
            days: (7, 14),
            medications: &[PENICILLIN_V],
            procedures: &[sct("117015009", "Throat culture")],
            stay: (0, 0),
            fever: true,
        },
    ),
    (
        8,
        Acute {
            code: sct("65363002", "Otitis media"),
            class: AMBULATORY,
            visit: PROBLEM_VISIT,
            days: (7, 14),
            medications: &[AMOXICILLIN],
            procedures: &[],
            stay: (0, 0),
            fever: true,
        },
    ),
    (
        8,
        Acute {
            code: sct("68566005", "Urinary tract infectious disease"),
            class: AMBULATORY,
            visit: PROBLEM_VISIT,
            days: (5, 10),
            medications: &[AMOXICILLIN],
            procedures: &[],
            stay: (0, 0),
            fever: true,
        },
    ),
    (
        6,
        Acute {
            code: sct("840539006", "COVID-19"),
            class: VIRTUAL,
            visit: TELEMEDICINE,
            days: (10, 21),
            medications: &[ACETAMINOPHEN],
            procedures: &[],
            stay: (0, 0),
            fever: true,
        },
    ),
    (
        6,
        Acute {
            code: sct("44465007", "Sprain of ankle"),
            class: EMERGENCY,
            visit: ER_ADMISSION,
            days: (14, 42),
            medications: &[IBUPROFEN],
            procedures: &[],
            stay: (0, 0),
            fever: false,
        },
    ),
    (
        4,
        Acute {
            code: sct("283371005", "Laceration of forearm"),
            class: EMERGENCY,
            visit: ER_ADMISSION,
            days: (10, 21),
            medications: &[IBUPROFEN],
            procedures: &[sct("288086009", "Suture open wound")],
            stay: (0, 0),
            fever: false,
        },
    ),
    (
        3,
        Acute {
            code: sct("65966004", "Fracture of forearm"),
            class: EMERGENCY,
            visit: ER_ADMISSION,
            days: (42, 84),
            medications: &[IBUPROFEN],
            procedures: &[sct("274474001", "Bone immobilization")],
            stay: (0, 0),
            fever: false,
        },
    ),
    (
        3,
        Acute {
            code: PNEUMONIA,
            class: INPATIENT,
            visit: HOSPITAL_ADMISSION,
            days: (14, 28),
            medications: &[AMOXICILLIN],
            procedures: &[CHEST_X_RAY],
            stay: (2, 6),
            fever: true,
        },
    ),
    (
        1,
        Acute {
            code: sct("74400008", "Appendicitis"),
            class: INPATIENT,
            visit: HOSPITAL_ADMISSION,
            days: (14, 28),
            medications: &[ACETAMINOPHEN],
            procedures: &[sct("80146002", "Appendectomy")],
            stay: (1, 4),
            fever: false,
        },
    ),
];

/// An allergy: its code, category, and the reactions it causes.
#[derive(Debug, Clone, Copy)]
pub struct Allergy {
    pub code: Code,
    pub category: &'static str,
    pub criticality: &'static str,
    pub reactions: &'static [Code],
}

const HIVES: Code = sct("247472004", "Wheal");
const RASH: Code = sct("271807003", "Eruption of skin");
const ANAPHYLAXIS: Code = sct("39579001", "Anaphylaxis");
const SNEEZING: Code = sct("76067001", "Sneezing");

pub const ALLERGIES: &[Allergy] = &[
    Allergy {
        code: sct("91935009", "Allergy to peanuts"),
        category: "food",
        criticality: "high",
        reactions: &[ANAPHYLAXIS, HIVES],
    },
    Allergy {
        code: sct("300913006", "Shellfish allergy"),
        category: "food",
        criticality: "high",
        reactions: &[HIVES, ANAPHYLAXIS],
    },
    Allergy {
        code: sct("91930004", "Allergy to eggs"),
        category: "food",
        criticality: "low",
        reactions: &[RASH, HIVES],
    },
    Allergy {
        code: sct("418689008", "Allergy to grass pollen"),
        category: "environment",
        criticality: "low",
        reactions: &[SNEEZING],
    },
    Allergy {
        code: sct("232350006", "House dust mite allergy"),
        category: "environment",
        criticality: "low",
        reactions: &[SNEEZING],
    },
    Allergy {
        code: sct("232347008", "Dander (animal) allergy"),
        category: "environment",
        criticality: "low",
        reactions: &[SNEEZING, HIVES],
    },
    Allergy {
        code: sct("424213003", "Allergy to bee venom"),
        category: "environment",
        criticality: "high",
        reactions: &[ANAPHYLAXIS, HIVES],
    },
    Allergy {
        code: sct("91936005", "Allergy to penicillin"),
        category: "medication",
        criticality: "high",
        reactions: &[HIVES, RASH],
    },
    Allergy {
        code: sct("300916003", "Latex allergy"),
        category: "environment",
        criticality: "low",
        reactions: &[RASH],
    },
];

/// Vaccines (CVX) and the ages, in months, a routine schedule gives them.
pub const CHILDHOOD_VACCINES: &[(Code, &[i64])] = &[
    (cvx("08", "Hep B, adolescent or pediatric"), &[0, 1, 6]),
    (cvx("20", "DTaP"), &[2, 4, 6, 15, 48]),
    (cvx("49", "Hib (PRP-OMP)"), &[2, 4, 12]),
    (cvx("133", "Pneumococcal conjugate PCV 13"), &[2, 4, 6, 12]),
    (cvx("10", "IPV"), &[2, 4, 6, 48]),
    (cvx("119", "rotavirus, monovalent"), &[2, 4]),
    (cvx("03", "MMR"), &[12, 48]),
    (cvx("21", "varicella"), &[12, 48]),
    (cvx("83", "Hep A, ped/adol, 2 dose"), &[12, 24]),
    (cvx("115", "Tdap"), &[132]),
    (cvx("62", "HPV, quadrivalent"), &[132, 138]),
    (cvx("114", "meningococcal MCV4P"), &[132, 192]),
];
pub const INFLUENZA: Code = cvx("140", "Influenza, split virus, trivalent, PF");
pub const TD: Code = cvx(
    "113",
    "Td (adult), 5 Lf tetanus toxoid, preservative free, adsorbed",
);
pub const ZOSTER: Code = cvx("121", "zoster vaccine, live");
pub const PNEUMOCOCCAL_23: Code = cvx("33", "pneumococcal polysaccharide vaccine, 23 valent");

/// The vital signs measured as a single quantity.
pub const VITAL_SIGNS: [Measure; 10] = [
    HEIGHT,
    WEIGHT,
    BMI,
    SYSTOLIC,
    DIASTOLIC,
    HEART_RATE,
    RESPIRATORY_RATE,
    TEMPERATURE,
    OXYGEN_SATURATION,
    PAIN,
];

/// Every code of the tables, for the tests.
pub fn all() -> Vec<Code> {
    let mut out = vec![
        AMBULATORY,
        INPATIENT,
        EMERGENCY,
        VIRTUAL,
        HOME_HEALTH,
        CHECK_UP,
        WELL_CHILD,
        PROBLEM_VISIT,
        FOLLOW_UP,
        TELEMEDICINE,
        ER_ADMISSION,
        HOSPITAL_ADMISSION,
        HOME_VISIT,
        BLOOD_PRESSURE,
        CHEST_X_RAY,
        ELECTROCARDIOGRAM,
        COLONOSCOPY,
        MAMMOGRAPHY,
        DEPRESSION_SCREENING,
        MEDICATION_RECONCILIATION,
        SPIROMETRY,
        INFLUENZA,
        TD,
        ZOSTER,
        PNEUMOCOCCAL_23,
    ];
    out.extend(VITAL_SIGNS.iter().map(|m| m.code));
    for p in [BASIC_METABOLIC, LIPID, BLOOD_COUNT, GLYCATED_HEMOGLOBIN] {
        out.push(p.code);
        out.extend(p.tests.iter().map(|t| t.measure.code));
    }
    for c in CHRONIC {
        out.push(c.code);
        out.extend(c.medications.iter().map(|m| m.code));
        if let Some((plan, activities)) = c.care_plan {
            out.push(plan);
            out.extend_from_slice(activities);
        }
    }
    for (_, a) in ACUTE {
        out.extend([a.code, a.class, a.visit]);
        out.extend(a.medications.iter().map(|m| m.code));
        out.extend_from_slice(a.procedures);
    }
    for a in ALLERGIES {
        out.push(a.code);
        out.extend_from_slice(a.reactions);
    }
    out.extend(CHILDHOOD_VACCINES.iter().map(|(c, _)| *c));
    out
}

/// Every UCUM unit of the tables, for the tests.
pub fn units() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = VITAL_SIGNS.iter().map(|m| m.unit).collect();
    for p in [BASIC_METABOLIC, LIPID, BLOOD_COUNT] {
        out.extend(p.tests.iter().map(|t| t.measure.unit));
    }
    for c in CHRONIC {
        out.extend(c.medications.iter().map(|m| m.dose.1));
    }
    for (_, a) in ACUTE {
        out.extend(a.medications.iter().map(|m| m.dose.1));
    }
    out
}

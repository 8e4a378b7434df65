"""The realistic profile's world knowledge: procedures with charge schedules, specialties,
places of service and diagnoses.

Codes are real CPT/HCPCS and ICD-10 codes so the data reads like a payer's, but the charges
are made up (order-of-magnitude plausible list prices per unit). Who receives a procedure
(age range, sex) is what makes ``demographic_mismatch`` learnable from the population.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np


@dataclass(frozen=True)
class Procedure:
    code: str
    charge: float  # list price per unit
    specialties: tuple[str, ...]
    sex: str = "FMU"  # sexes it is billed for
    min_age: int = 0
    max_age: int = 120
    max_units: int = 1


P = Procedure
EM = ("family_medicine", "internal_medicine", "geriatrics")
PROCEDURES: Final = (
    P("99202", 110, (*EM, "pediatrics", "dermatology")),
    P("99203", 165, (*EM, "pediatrics", "dermatology", "orthopedic_surgery", "urology")),
    P("99204", 245, (*EM, "cardiology", "obstetrics_gynecology", "orthopedic_surgery")),
    P("99212", 75, (*EM, "pediatrics", "dermatology", "psychiatry")),
    P("99213", 110, (*EM, "pediatrics", "dermatology", "obstetrics_gynecology", "urology",
                     "cardiology", "orthopedic_surgery")),
    P("99214", 165, (*EM, "pediatrics", "cardiology", "urology", "obstetrics_gynecology")),
    P("99215", 235, (*EM, "cardiology")),
    P("99283", 270, ("emergency_medicine",)),
    P("99284", 420, ("emergency_medicine",)),
    P("99285", 620, ("emergency_medicine",)),
    P("99391", 150, ("pediatrics",), max_age=1),
    P("99393", 160, ("pediatrics",), min_age=5, max_age=11),
    P("99394", 170, ("pediatrics", "family_medicine"), min_age=12, max_age=17),
    P("99395", 190, ("family_medicine", "internal_medicine"), min_age=18, max_age=39),
    P("99397", 220, ("family_medicine", "internal_medicine", "geriatrics"), min_age=65),
    P("99460", 180, ("pediatrics",), max_age=0),
    P("G0438", 180, ("family_medicine", "geriatrics"), min_age=65),
    P("G0439", 130, ("family_medicine", "geriatrics"), min_age=65),
    P("80053", 25, ("laboratory", *EM)),
    P("85025", 18, ("laboratory", *EM, "pediatrics", "emergency_medicine")),
    P("83036", 22, ("laboratory", *EM), min_age=18),
    P("80061", 30, ("laboratory", *EM, "cardiology"), min_age=18),
    P("84153", 40, ("laboratory", "urology", *EM), sex="M", min_age=40),
    P("81002", 8, ("laboratory", *EM, "urology", "obstetrics_gynecology")),
    P("87880", 30, ("laboratory", "pediatrics", "family_medicine"), min_age=3, max_age=40),
    P("71046", 70, ("radiology", "emergency_medicine")),
    P("77067", 240, ("radiology",), sex="F", min_age=40),
    P("73721", 900, ("radiology",), min_age=12),
    P("74177", 1100, ("radiology", "emergency_medicine")),
    P("76805", 320, ("radiology", "obstetrics_gynecology"), sex="F", min_age=15, max_age=50),
    P("76856", 280, ("radiology", "obstetrics_gynecology"), sex="F", min_age=12),
    P("76870", 250, ("radiology", "urology"), sex="M"),
    P("59400", 4200, ("obstetrics_gynecology",), sex="F", min_age=16, max_age=48),
    P("58150", 5200, ("obstetrics_gynecology",), sex="F", min_age=30),
    P("57454", 420, ("obstetrics_gynecology",), sex="F", min_age=21),
    P("88175", 60, ("obstetrics_gynecology", "laboratory"), sex="F", min_age=21, max_age=65),
    P("52000", 520, ("urology",), min_age=18),
    P("55700", 1100, ("urology",), sex="M", min_age=45),
    P("55250", 900, ("urology",), sex="M", min_age=25, max_age=60),
    P("93000", 45, ("cardiology", *EM, "emergency_medicine"), min_age=18),
    P("93306", 650, ("cardiology",)),
    P("93458", 3400, ("cardiology",), min_age=40),
    P("93015", 420, ("cardiology",), min_age=30),
    P("20610", 190, ("orthopedic_surgery",), min_age=18),
    P("27447", 9500, ("orthopedic_surgery",), min_age=50),
    P("29881", 3200, ("orthopedic_surgery",), min_age=16),
    P("97110", 55, ("physical_therapy",), max_units=4),
    P("97140", 50, ("physical_therapy",), max_units=3),
    P("97161", 180, ("physical_therapy",)),
    P("11102", 160, ("dermatology",)),
    P("17000", 110, ("dermatology",), min_age=18),
    P("17110", 150, ("dermatology", "pediatrics")),
    P("90791", 240, ("psychiatry",), min_age=6),
    P("90834", 140, ("psychiatry",), min_age=6),
    P("90837", 190, ("psychiatry",), min_age=12),
    P("90460", 30, ("pediatrics", "family_medicine"), max_age=18, max_units=4),
    P("90707", 95, ("pediatrics", "family_medicine"), min_age=1, max_age=18),
    P("J1885", 6, ("emergency_medicine", "orthopedic_surgery"), min_age=18, max_units=4),
    P("J0696", 12, ("emergency_medicine", "pediatrics", "family_medicine"), max_units=8),
)

# specialty -> (share of providers, mean extra lines per claim, places of service with weights,
# diagnoses)
SPECIALTIES: Final[dict[str, tuple[float, float, dict[str, float], tuple[str, ...]]]] = {
    "family_medicine": (0.22, 0.9, {"office": 0.9, "telehealth": 0.1},
                        ("I10", "E11.9", "J06.9", "Z00.00", "E78.5", "M54.5")),
    "internal_medicine": (0.14, 1.0, {"office": 0.85, "telehealth": 0.1,
                                      "outpatient_hospital": 0.05},
                          ("I10", "E11.9", "E78.5", "N18.3", "Z00.00")),
    "geriatrics": (0.03, 1.2, {"office": 0.7, "nursing_facility": 0.3},
                   ("I10", "E11.9", "F03.90", "M17.11", "Z00.00")),
    "pediatrics": (0.09, 0.8, {"office": 0.95, "telehealth": 0.05},
                   ("Z00.129", "J06.9", "H66.90", "J02.9", "Z23")),
    "obstetrics_gynecology": (0.06, 0.8, {"office": 0.7, "outpatient_hospital": 0.2,
                                          "inpatient_hospital": 0.1},
                              ("Z34.90", "N92.0", "Z01.419", "O80", "N95.1")),
    "urology": (0.03, 0.7, {"office": 0.7, "outpatient_hospital": 0.3},
                ("N40.1", "R31.9", "N20.0", "Z30.2", "C61")),
    "cardiology": (0.06, 1.1, {"office": 0.6, "outpatient_hospital": 0.3,
                               "inpatient_hospital": 0.1},
                   ("I25.10", "I48.91", "I10", "R07.9", "I50.9")),
    "orthopedic_surgery": (0.06, 0.8, {"office": 0.6, "outpatient_hospital": 0.25,
                                       "inpatient_hospital": 0.15},
                           ("M17.11", "M23.205", "M25.561", "S83.511A", "M54.5")),
    "physical_therapy": (0.07, 1.4, {"office": 1.0},
                         ("M54.5", "M25.561", "M17.11", "S83.511A")),
    "radiology": (0.05, 0.3, {"outpatient_hospital": 0.6, "office": 0.4},
                  ("R07.9", "M25.561", "Z12.31", "R10.9", "Z34.90")),
    "laboratory": (0.06, 1.5, {"independent_lab": 1.0},
                   ("Z00.00", "E11.9", "E78.5", "R31.9", "Z01.419")),
    "dermatology": (0.04, 0.6, {"office": 1.0}, ("L57.0", "D48.5", "B07.9", "L70.0")),
    "psychiatry": (0.05, 0.1, {"office": 0.6, "telehealth": 0.4},
                   ("F32.9", "F41.1", "F43.10", "F90.0")),
    "emergency_medicine": (0.04, 1.3, {"emergency_room": 1.0},
                           ("R07.9", "S93.401A", "R10.9", "J06.9", "S01.01XA")),
}
SPECIALTY_NAMES: Final = tuple(SPECIALTIES)
# Whom a specialty treats at all, beyond what its codes allow (pediatricians see children).
SPECIALTY_AGES: Final = {"pediatrics": (0, 17), "geriatrics": (65, 120)}
SPECIALTY_SEXES: Final = {"obstetrics_gynecology": "FU"}
PLACES: Final = tuple(sorted({p for s in SPECIALTIES.values() for p in s[2]}))
DIAGNOSES: Final = tuple(sorted({d for s in SPECIALTIES.values() for d in s[3]}))
PRIMARY_CARE: Final = ("family_medicine", "internal_medicine", "geriatrics")
AGE_BANDS: Final = np.array([0, 1, 2, 5, 12, 16, 18, 21, 30, 40, 45, 50, 65, 121])
SEX_CODES: Final = "FMU"


def procedure_weights() -> np.ndarray:
    """(specialty x sex x age band x code) probability of a line's code; specialties whose
    codes all miss a patient fall back to their unrestricted mix."""
    n_bands = len(AGE_BANDS) - 1
    weights = np.zeros((len(SPECIALTY_NAMES), 3, n_bands, len(PROCEDURES)))
    for k, proc in enumerate(PROCEDURES):
        for s, name in enumerate(SPECIALTY_NAMES):
            if name not in proc.specialties:
                continue
            # Office visits and cheap tests are billed far more often than surgery.
            weight = 1.0 / (1.0 + proc.charge / 150.0)
            for x, sex in enumerate(SEX_CODES):
                if sex not in proc.sex and sex != "U":
                    continue
                fits = (AGE_BANDS[:-1] >= proc.min_age) & (AGE_BANDS[1:] - 1 <= proc.max_age)
                weights[s, x, fits, k] = weight
    empty = weights.sum(axis=3) == 0
    unrestricted = np.array([[1.0 if n in p.specialties else 0.0 for p in PROCEDURES]
                             for n in SPECIALTY_NAMES])
    weights[empty] = np.broadcast_to(unrestricted[:, None, None, :], weights.shape)[empty]
    return np.asarray(weights / weights.sum(axis=3, keepdims=True))


def specialty_weights() -> np.ndarray:
    """(sex x age band x specialty) probability that a specialist visit goes to a specialty;
    specialties without a single code for the patient get none."""
    weights = procedure_weights()
    restricted = np.zeros(weights.shape[:3])
    for s, name in enumerate(SPECIALTY_NAMES):
        fits = np.zeros((3, len(AGE_BANDS) - 1), dtype=bool)
        for proc in PROCEDURES:
            if name in proc.specialties:
                for x, sex in enumerate(SEX_CODES):
                    if sex in proc.sex or sex == "U":
                        fits[x] |= ((AGE_BANDS[:-1] >= proc.min_age)
                                    & (AGE_BANDS[1:] - 1 <= proc.max_age))
        low, high = SPECIALTY_AGES.get(name, (0, 120))
        fits &= (AGE_BANDS[:-1] >= low) & (AGE_BANDS[1:] - 1 <= high)
        fits &= np.array([sex in SPECIALTY_SEXES.get(name, SEX_CODES) for sex in SEX_CODES]
                         )[:, None]
        restricted[s] = fits * SPECIALTIES[name][0]
    out = np.moveaxis(restricted, 0, 2)
    return np.asarray(out / out.sum(axis=2, keepdims=True))

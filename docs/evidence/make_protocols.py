# ruff: noqa: E501  (the protocol headers are long data strings, wrapped as they appear in the files)
"""Write the proposed issue-24 protocol files (docs/evidence/protocols.md shows the same text).

Historical: the shipped files in experiments/protocols/ have changed since (Bednarski's cytarabine, patients
marked disease = "remission"); writing this script's output over them would undo that.

    python docs/evidence/make_protocols.py OUTDIR        # default OUTDIR: /tmp/i24_protocols

Each file is TOML in the style of experiments/protocols/bachanova2014_hi_cy_flu.toml. Files that use only today's
event kinds and products are also loaded with nksim.protocol.load_protocol as a check; the others need the new kinds
(il2dt, rhil15_iv, rhil15_sc, n803), the product "ciml" and the protocol field host_tolerant of
docs/evidence/mechanisms.md, so today's loader must refuse them (also checked).
"""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

CONF = ("# Confidence: A = stored page of the primary source; B = secondary source (review table, registry, conference\n"
        "# abstract of the same group); D = derived here from reported percentages; \"assumption\" = ours. Day 0 is the\n"
        "# (first) NK infusion. Checks of every number: docs/evidence/trials_checked.md.\n")

HICYFLU = "A: Minnesota Hi-Cy/Flu, Bachanova 2014 Fig 1 (Flu 25 mg m-2 d-6..-2, Cy 60 mg kg-1 d-5,-4)"


def _num(x: float) -> str:
    """A TOML float, exponent form for cell doses (2.6e7), plain otherwise (25.0)."""
    if abs(x) >= 1e5:
        return f"{x:.6g}".replace("e+0", "e").replace("e+", "e")
    return repr(float(x))


def ev(day, kind, dose, unit, source, donor=None, indent=""):
    """One [[events]] (or [[groups.<indent>.events]]) table."""
    head = "[[events]]" if indent == "" else f"[[groups.{indent}.events]]"
    d = f"{day:g}" if isinstance(day, (int, float)) else day
    out = [head, f"day = {d}", f'kind = "{kind}"', f"dose = {_num(dose)}",
           f'unit = "{unit}"']
    if donor:
        out.append(f'donor = "{donor}"')
    out.append(f'source = "{source}"')
    return "\n".join(out) + "\n"


def hicyflu(source=HICYFLU, flu_days=(-6, -5, -4, -3, -2), cy_days=(-5, -4), flu=25.0, cy=60.0):
    """Fludarabine and cyclophosphamide events (default: the Minnesota Hi-Cy/Flu)."""
    s = "# Lymphodepletion\n"
    for d in flu_days:
        s += ev(d, "fludarabine", flu, "mg m-2", source) + "\n"
    for d in cy_days:
        s += ev(d, "cyclophosphamide", cy, "mg kg-1", source) + "\n"
    return s


def patients(prefix, groups, weight=70.0, bsa=1.8, src="assumption (model default adult)", blasts=None, note=None):
    """groups: list of (group id, count)."""
    s = ""
    for gid, n in groups:
        for i in range(1, n + 1):
            s += "[[patients]]\n"
            s += f'id = "{prefix}{gid[:4]}_{i:02d}"\n' if len(groups) > 1 else f'id = "{prefix}{i:02d}"\n'
            s += f'group = "{gid}"\n'
            s += "evaluable = true\n"
            s += f'body_weight = {{value = {weight}, unit = "kg", source = "{src}"}}\n'
            s += f'body_surface_area = {{value = {bsa}, unit = "m2", source = "{src}"}}\n'
            b = blasts.get(gid) if isinstance(blasts, dict) else blasts
            if b is not None:
                s += f'baseline_blast_pct = {{value = {b[0]}, unit = "percent", source = "{b[1]}"}}\n'
            if note:
                s += f'note = "{note}"\n'
            s += "\n"
    return s


def group(gid, description, source, events):
    """A [groups.<gid>] table with its events."""
    s = f'[groups.{gid}]\ndescription = "{description}"\nsource = "{source}"\n\n'
    for e in events:
        s += ev(*e[:5], donor=e[5] if len(e) > 5 else None, indent=gid) + "\n"
    return s


def head(name, title, source, start, end, product, assess=(28,), snaps=(0, 7, 14, 28), tolerant=None):
    """The [protocol] table."""
    s = "[protocol]\n"
    s += f'name = "{name}"\ntitle = "{title}"\nsource = "{source}"\n'
    s += f"start_day = {start}\nend_day = {end}\n"
    s += f"assessment_days = [{', '.join(str(a) for a in assess)}]\n"
    s += f"snapshot_days = [{', '.join(str(a) for a in snaps)}]\n"
    s += "infusions_after_lymphodepletion = true\n"
    s += f'nk_product = "{product}"\n'
    if tolerant is not None:
        s += f"host_tolerant = {'true' if tolerant else 'false'}  # NEW field (mechanisms.md E)\n"
    return s + "\n"


def il2(days, dose, source, indent=""):
    """IL-2 s.c. events (flat MIU doses)."""
    return "".join(ev(d, "il2", dose, "MIU", source, indent=indent) + "\n" for d in days)


FILES: dict[str, str] = {}

# ------------------------------------------------------------------------------------------ Bachanova IL2DT
FILES["bachanova2014_il2dt"] = (
    "# Bachanova et al. 2014, Blood 123:3855, the IL2DT arm (15 of 57 refractory AML patients; the 42 without IL2DT\n"
    "# are bachanova2014_hi_cy_flu). NCT00274846, NCT01106950.\n#\n"
    "# From the paper (A: abstract PMC4064329; Fig 1 legend): Flu 25 mg m-2 d-6..-2, Cy 60 mg kg-1 d-5,-4; IL2DT (IL-2-\n"
    "#   diphtheria toxin, denileukin diftitox) i.v. 'at day -1 +- -2', one dose (n = 11) or two (n = 4), 12 (n = 11) or 18\n"
    "#   (n = 4) per kg -- printed 'mg/kg', read as ug/kg (the FDA doses are 9 and 18 ug/kg: Attia 2005, A); NK day 0;\n"
    "#   IL-2 9e6 IU s.c. from 4 h after NK, every other day x6. Expansion (> 100 donor NK/uL at day 14) 4/15 (D; 27 %),\n"
    "#   median 1000 donor NK/uL in expanders; CR day 28 8/15 (53 %); Treg < 5 % at day 7 predicted expansion.\n"
    "# From the review (B, Curr Opin Organ Transplant 2015;20:671 Table 1, PMC4635041): this cohort's product was\n"
    "#   CD3/CD19-depleted, NK dose 26e6 kg-1 (the non-IL2DT cohorts: 9.6e6 and 3.4e6) -- a confounder of the IL2DT effect.\n"
    "# ASSUMPTIONS: the 4 patients with 18 ug/kg are the 4 with two doses, given on days -2 and -1; the others 12 ug/kg\n"
    "#   on day -1; IL-2 '4 h after' on day 0 (same step); 7 + 3 virtual patients (trial 11 + 4); model default adult;\n"
    "#   baseline blasts from the population draw. 'CR' read as marrow blasts < 5 % (the paper may pool CRp/CRi).\n"
    "# Uses (0.6.0): event kind il2dt (mechanisms.md A).\n" + CONF + "\n"
    + head("bachanova2014_il2dt", "Bachanova 2014, IL2DT arm: Hi-Cy/Flu, IL2DT d-1, haplo NK 26e6/kg d0, IL-2 9 MIU qod x6",
           "Bachanova 2014 Blood 123:3855 (A: abstract, Fig 1); product and dose B (PMC4635041 Table 1)", -6, 90, "fresh",
           snaps=(-6, 0, 7, 14, 28))
    + hicyflu()
    + ev(0, "nk_infusion", 26e6, "kg-1", "B: review table, Bachanova 2014 cohort 3 (+IL2DT) NK dose 26e6 kg-1, CD3/CD19-depleted",
         donor="haplo") + "\n"
    + il2([0, 2, 4, 6, 8, 10], 9.0, "A: Bachanova 2014 Fig 1: IL-2 9e6 units s.c. from 4 h after NK, every other day x6")
    + group("one_dose", "IL2DT 12 ug kg-1 once (trial n = 11)", "A: Bachanova 2014 Fig 1 (unit read as ug/kg)",
            [(-1, "il2dt", 12.0, "ug kg-1", "A: Fig 1, 12 per kg on day -1 (ug/kg, see header)")])
    + group("two_doses", "IL2DT 18 ug kg-1 twice (trial n = 4)", "A: Bachanova 2014 Fig 1; pairing of dose and number assumed",
            [(-2, "il2dt", 18.0, "ug kg-1", "assumption: days -2 and -1 ('day -1 +- -2')"),
             (-1, "il2dt", 18.0, "ug kg-1", "assumption: days -2 and -1 ('day -1 +- -2')")])
    + patients("bdt_", [("one_dose", 7), ("two_doses", 3)])
)

# ------------------------------------------------------------------------------------------ Cooley i.v.
iv_groups = [("d030", 0.3, 2), ("d050", 0.5, 2), ("d075", 0.75, 4), ("d100", 1.0, 2)]
s = ("# Cooley et al. 2019, Blood Adv 3:1970, phase 1 (NCT01385423): haploidentical NK + intravenous rhIL-15 in\n"
     "# refractory AML, 26 patients (25 evaluable, D).\n#\n"
     "# From the paper (A: abstract): rhIL-15 0.3-1.0 ug/kg i.v. 'on 12 consecutive days'; robust expansion at day 14 in\n"
     "#   36 % (9/25, D), complete remission 32 % (8/25, D); no CRS after i.v. dosing.\n"
     "# From the ASH 2015 abstract of the same trial (B, Blood 126:566): Cy/Flu lymphodepletion; NK 'activated overnight\n"
     "#   with IL-15'; cohorts 0.25, 0.5, 1 and 0.75 ug/kg (MTD 0.75); serum IL-15 peak 1 h, large drop by 4 h; in\n"
     "#   expanders donor NK ~90/uL at day 7 and ~1040/uL at day 14 (mean ALC x mean donor %).\n"
     "# ASSUMPTIONS: lymphodepletion = the Minnesota Hi-Cy/Flu (Bachanova 2014 Fig 1; the stored pages say only 'Cy/Flu');\n"
     "#   NK dose 10e6 kg-1 (not in the stored pages; Minnesota products 3.4-26e6 kg-1); rhIL-15 on days 1..12; virtual\n"
     "#   cohorts 2/2/4/2 over 0.3/0.5/0.75/1.0 ug/kg (trial cohort sizes not read); default adult; blasts drawn.\n"
     "# Uses (0.6.0): event kind rhil15_iv (mechanisms.md C).\n" + CONF + "\n"
     + head("cooley2019_rhil15_iv", "Cooley 2019 phase 1: Hi-Cy/Flu, haplo NK d0, rhIL-15 i.v. 0.3-1.0 ug/kg d1-12",
            "Cooley 2019 Blood Adv 3:1970 (A: abstract); Cooley 2015 ASH abstract Blood 126:566 (B)", -6, 90, "fresh")
     + hicyflu("assumption: Minnesota Hi-Cy/Flu as Bachanova 2014 Fig 1 (Cooley: 'lymphodepleting chemotherapy')")
     + ev(0, "nk_infusion", 10e6, "kg-1", "assumption: dose not in the stored pages (prior 3e6-30e6 kg-1)", donor="haplo") + "\n")
for gid, dose, _n in iv_groups:
    s += group(gid, f"rhIL-15 {dose} ug kg-1 i.v. daily x12", "A: Cooley 2019 (dose range 0.3-1.0); B: ASH 2015 cohorts",
               [(d, "rhil15_iv", dose, "ug kg-1", "A: 12 consecutive days; start day 1 assumed") for d in range(1, 13)])
s += patients("civ_", [(g, n) for g, _, n in iv_groups])
FILES["cooley2019_rhil15_iv"] = s

# ------------------------------------------------------------------------------------------ Cooley s.c.
FILES["cooley2019_rhil15_sc"] = (
    "# Cooley et al. 2019, Blood Adv 3:1970, phase 2 (NCT02395822): haploidentical NK + subcutaneous rhIL-15 in\n"
    "# refractory AML, 16 patients (15 evaluable, D).\n#\n"
    "# From the paper (A: abstract): '10 once per day doses of SC rhIL-15 at 2.0 ug/kg'; expansion at day 14 27 % (4/15,\n"
    "#   D); remission 40 % (6/15, D; 'remission', not stated as CR); CRS 56 % (9/16); SC 'slower pharmacokinetic\n"
    "#   clearance' than IV.\n"
    "# From the registry (B, NCT02395822): 'CD3/CD19 depleted, IL-15 activated, donor natural killer (NK) cells' after a\n"
    "#   preparative regimen.\n"
    "# ASSUMPTIONS: Minnesota Hi-Cy/Flu; NK 10e6 kg-1; rhIL-15 days 1..10; 10 virtual patients; default adult.\n"
    "# Uses (0.6.0): event kind rhil15_sc (mechanisms.md C).\n" + CONF + "\n"
    + head("cooley2019_rhil15_sc", "Cooley 2019 phase 2: Hi-Cy/Flu, haplo NK d0, rhIL-15 s.c. 2 ug/kg d1-10",
           "Cooley 2019 Blood Adv 3:1970 (A: abstract); NCT02395822 (B)", -6, 90, "fresh")
    + hicyflu("assumption: Minnesota Hi-Cy/Flu as Bachanova 2014 Fig 1")
    + ev(0, "nk_infusion", 10e6, "kg-1", "assumption: dose not in the stored pages (prior 3e6-30e6 kg-1)", donor="haplo") + "\n"
    + "".join(ev(d, "rhil15_sc", 2.0, "ug kg-1", "A: 2.0 ug/kg s.c. once daily x10; start day 1 assumed") + "\n"
              for d in range(1, 11))
    + patients("csc_", [("all", 10)])
)

# ------------------------------------------------------------------------------------------ Romee CIML
r_groups = [("c05", 0.5e6, 3), ("c1", 1e6, 3), ("c10", 10e6, 4)]
s = ("# Romee et al. 2016, Sci Transl Med 8:357ra123, first-in-human phase 1 of cytokine-induced memory-like (CIML) NK\n"
     "# (NCT01898793) in relapsed/refractory AML: 13 treated, 9 evaluable.\n#\n"
     "# From a review table (B, Cancers 2020, PMC7694052 Table 1): haploidentical PB-NK preactivated 12-16 h with IL-12,\n"
     "#   IL-15 and IL-18; dose levels printed '0.5, 1 and 10^6 NK/kg' (read as 0.5, 1 and 10 x 10^6 kg-1, as TRIALS.md);\n"
     "#   overall response 55 % (5/9), CR 45 % (4/9, CR/CRi). Flu/Cy lymphodepletion and IL-2 support (TRIALS.md, B).\n"
     "# ASSUMPTIONS: Flu 25 mg m-2 d-6..-2 + Cy 60 mg kg-1 d-5,-4 (doses not in the stored pages); IL-2 1 MIU m-2 s.c.\n"
     "#   every other day x7 from day 0 = 1.8 MIU flat (dose/schedule not read; the low-dose schedule that CD25+ CIML\n"
     "#   answer to, Leong 2014); 3/3/4 virtual patients over the dose levels (trial split not read).\n"
     "# Uses (0.6.0): nk_product = \"ciml\" (mechanisms.md D).\n" + CONF + "\n"
     + head("romee2016_ciml", "Romee 2016: Flu/Cy, haplo CIML NK 0.5-10e6/kg d0, low-dose IL-2 qod x7",
            "Romee 2016 Sci Transl Med 8:357ra123; numbers B (PMC7694052 Table 1)", -6, 90, "ciml")
     + hicyflu("assumption: Flu/Cy doses not in the stored pages; Minnesota Hi-Cy/Flu days")
     + il2([0, 2, 4, 6, 8, 10, 12], 1.8, "assumption: 1 MIU m-2 (1.8 MIU at 1.8 m2) every other day x7"))
for gid, dose, _n in r_groups:
    s += group(gid, f"CIML NK {dose:g} kg-1", "B: review table dose levels",
               [(0, "nk_infusion", dose, "kg-1", "B: Romee 2016 dose level", "haplo")])
s += patients("rom_", [(g, n) for g, _, n in r_groups])
FILES["romee2016_ciml"] = s

# ------------------------------------------------------------------------------------------ Fehniger
f_groups = [("d3e5", 3e5, 3), ("d1e6", 1e6, 3), ("d3e6", 3e6, 6)]
s = ("# Fehniger et al. 2018, Biol Blood Marrow Transplant 24:1581: CNDO-109-activated haploidentical NK in high-risk\n"
     "# AML in first complete remission, no cytokine, 12 patients.\n#\n"
     "# From the paper (A: abstract PubMed 29597002; Table 1 PMC6232080): doses 3e5 (n = 3), 1e6 (n = 3), 3e6 (n = 6) kg-1;\n"
     "#   lymphodepleting Flu/Cy; cryopreserved product; no exogenous cytokine; donor NK detected at day 7 in 10/12 and at\n"
     "#   day >= 14 in 3/12; Table 1 day-7 'Donor NK Cells (%)' 0, 2, 0 | 2, 15, 1 | 15, 2, 0, 84, 11, 64; median RFS\n"
     "#   105, 156, 337 days by dose level. Patients mostly >= 66 years.\n"
     "# ASSUMPTIONS: Flu/Cy = Minnesota Hi-Cy/Flu (doses not read); product mapped to 'fresh' (CNDO-109 overnight\n"
     "#   activation; cryopreservation not modelled -- it lowered persistence in NSG mice, PMC4099265); baseline marrow\n"
     "#   blasts 2 % (CR1); day-7 share read as donor % of blood NK (donor_chimerism_nk); default adult.\n"
     "#   Held-out check (trials_checked.md section 7), not a target.\n" + CONF + "\n"
     + head("fehniger2018_cndo109", "Fehniger 2018: Flu/Cy, CNDO-109-activated haplo NK 3e5/1e6/3e6 per kg d0, no cytokine",
            "Fehniger 2018 BBMT 24:1581 (A: abstract, Table 1)", -6, 365, "fresh", assess=(28, 90, 180, 270, 365))
     + hicyflu("assumption: Flu/Cy doses not in the stored pages; Minnesota Hi-Cy/Flu"))
for gid, dose, n in f_groups:
    s += group(gid, f"CNDO-109-NK {dose:g} kg-1 (trial n = {n})", "A: Fehniger 2018 abstract",
               [(0, "nk_infusion", dose, "kg-1", "A: dose level", "haplo")])
s += patients("feh_", [(g, n) for g, _, n in f_groups], blasts=(2.0, "assumption: CR1, blasts < 5 %"))
FILES["fehniger2018_cndo109"] = s

# ------------------------------------------------------------------------------------------ Björklund
FILES["bjorklund2018_no_il2"] = (
    "# Bjorklund et al. 2018, Clin Cancer Res 24:1834: IL-2-activated haploidentical NK without systemic IL-2 in\n"
    "# refractory/relapsed high-risk MDS, MDS/AML and AML, 16 patients.\n#\n"
    "# From the paper (A: abstract): Flu/Cy + total lymphoid irradiation (TLI); IL-2-activated NK; no systemic IL-2;\n"
    "#   objective responses 6/16; all 5 evaluable responders had donor NK at days 7/14; recipient activated Tregs rose.\n"
    "# From the ASH 2014 abstract (B, first 12 patients): 'intermediate doses' of Cy and Flu, TLI 2 or 4 Gy; NK activated\n"
    "#   16 h; expansion (> 100 donor NK/uL at day 14) in none; microchimerism (RT-PCR) at day 7-14 in 6, lost within\n"
    "#   7-14 days; 4 of those 6 in CR.\n"
    "# ASSUMPTIONS: Flu 25 mg m-2 d-6..-2 and Cy 30 mg kg-1 d-5,-4 ('intermediate': half the Hi-Cy dose); TLI NOT\n"
    "#   MODELLED (nksim has no radiation: host depletion is under-estimated); NK 5e6 kg-1 (dose not read); product\n"
    "#   'fresh'; population MDS/AML drawn as R/R AML; default adult. Held-out check.\n" + CONF + "\n"
    + head("bjorklund2018_no_il2", "Bjorklund 2018: Flu/Cy (+TLI not modelled), IL-2-activated haplo NK d0, no IL-2",
           "Bjorklund 2018 Clin Cancer Res 24:1834 (A: abstract); ASH 2014 Blood 124:1120 (B)", -6, 90, "fresh")
    + hicyflu("assumption: 'intermediate' Flu/Cy (ASH 2014, B): Flu 25 mg m-2 x5, Cy 30 mg kg-1 x2", cy=30.0)
    + ev(0, "nk_infusion", 5e6, "kg-1", "assumption: dose not in the stored pages (prior 1e6-30e6 kg-1)", donor="haplo") + "\n"
    + patients("bjo_", [("all", 10)])
)

# ------------------------------------------------------------------------------------------ Curti 2011
c_groups = [("active", 5, (40.0, "assumption: active disease, population median")), ("molecular", 2, (1.0, "A: molecular relapse (morphologic CR)")),
            ("cr", 6, (1.0, "A: morphologic CR"))]
s = ("# Curti et al. 2011, Blood 118:3273: purified CD56+CD3- KIR-ligand-mismatched haploidentical NK after Flu/Cy and\n"
     "# IL-2 in elderly high-risk AML (NCT00799799), 13 patients: 5 active disease, 2 molecular relapse, 6 in CR.\n#\n"
     "# From the paper (A: abstract PubMed 21791425): median NK 2.74e6 kg-1, T < 1e5 kg-1; active disease: 1/5 transient\n"
     "#   CR; molecular relapse: 2/2 CR (9 and 4 months); CR: 3/6 disease-free at 18-34 months; donor NK in blood of all\n"
     "#   evaluable patients, peak on day 10, also in marrow in some.\n"
     "# From the review (B, PMC4635041): IL-2 1.0e6 IU m-2; peak expansion days 7-10.\n"
     "# ASSUMPTIONS: Flu/Cy = Minnesota Hi-Cy/Flu (doses not read); IL-2 1.8 MIU flat every other day x6 from day 0\n"
     "#   (schedule not read); one virtual patient per trial patient (5/2/6); baseline blasts 40 % (active) or 1 %\n"
     "#   (molecular relapse, CR); default adult. Held-out check.\n" + CONF + "\n"
     + head("curti2011_elderly", "Curti 2011: Flu/Cy, purified haplo NK 2.74e6/kg d0, IL-2 1 MIU/m2",
            "Curti 2011 Blood 118:3273 (A: abstract); IL-2 dose B (PMC4635041)", -6, 365, "fresh",
            assess=(28, 90, 180, 270, 365))
     + hicyflu("assumption: Flu/Cy doses not in the stored pages; Minnesota Hi-Cy/Flu")
     + ev(0, "nk_infusion", 2.74e6, "kg-1", "A: median NK dose 2.74e6 kg-1", donor="haplo") + "\n"
     + il2([0, 2, 4, 6, 8, 10], 1.8, "B: 1e6 IU m-2 (1.8 MIU at 1.8 m2); every other day x6 assumed"))
for gid, n, _b in c_groups:
    s += f'[groups.{gid}]\ndescription = "{gid} ({n} trial patients)"\nsource = "A: Curti 2011 abstract"\nevents = []\n\n'
s += patients("cur_", [(g, n) for g, n, _ in c_groups], blasts={g: b for g, _, b in c_groups})
FILES["curti2011_elderly"] = s

# ------------------------------------------------------------------------------------------ Geller
FILES["geller2011_no_tbi"] = (
    "# Geller et al. 2011, Cytotherapy 13:98: haploidentical NK after Hi-Cy/Flu with IL-2 in recurrent ovarian/breast\n"
    "# cancer; the arm WITHOUT TBI (13 of 20; 7 more also got 200 cGy TBI, which nksim does not model).\n#\n"
    "# From the paper (A: abstract PMC3760671): Flu 25 mg m-2 x5, Cy 60 mg kg-1 x2; NK incubated overnight in IL-2; mean\n"
    "#   NK 2.16e7 kg-1; IL-2 10 MU s.c. 'three times/week x 6 doses'; expansion = >= 100 donor NK/uL at day 14; donor DNA\n"
    "#   at day 7 in 9/13 without TBI; Treg higher at day 14 than before chemotherapy; serum IL-15 rose after the\n"
    "#   regimen; one patient (not evaluable) expanded.\n"
    "# ASSUMPTIONS: days of Flu/Cy as Bachanova 2014 Fig 1 (same Minnesota regimen); IL-2 on days 0, 2, 4, 7, 9, 11\n"
    "#   (Mon-Wed-Fri from a Monday infusion); 10 virtual patients; solid tumours: marrow blasts irrelevant (drawn), only\n"
    "#   blood quantities are compared. Held-out check.\n" + CONF + "\n"
    + head("geller2011_no_tbi", "Geller 2011 (no TBI): Hi-Cy/Flu, haplo NK 21.6e6/kg d0, IL-2 10 MIU 3x/week x6",
           "Geller 2011 Cytotherapy 13:98 (A: abstract)", -6, 60, "fresh", snaps=(0, 7, 14))
    + hicyflu("A: Geller 2011 (Flu 25 mg m-2 x5, Cy 60 mg kg-1 x2); days as Bachanova 2014 Fig 1 (assumption)")
    + ev(0, "nk_infusion", 21.6e6, "kg-1", "A: mean NK dose 2.16e7 kg-1", donor="haplo") + "\n"
    + il2([0, 2, 4, 7, 9, 11], 10.0, "A: 10 MU s.c. three times a week x6; Mon-Wed-Fri days assumed")
    + patients("gel_", [("all", 10)])
)

# ------------------------------------------------------------------------------------------ Berrien-Elliott N-803 vs IL-2
be_common = ("# Berrien-Elliott et al. 2022, Blood 139:1177: two haploidentical-NK cohorts in R/R AML, cytokine support by\n"
             "# N-803 (IL-15 superagonist; WUSTL) or IL-2 (UMN). From the paper (A: abstract, direction only): N-803 gave less\n"
             "#   clinical activity than IL-2, more proliferating recipient CD8+ T cells, and faster T-cell killing of memory-like\n"
             "#   NK (MLR). No k/n, doses or schedules in the stored pages.\n"
             "# ASSUMPTIONS (all): Minnesota Hi-Cy/Flu; CIML product 10e6 kg-1 in BOTH files so that only the cytokine differs\n"
             "#   (the trials' products and regimens were not read: this pair is a mechanism check, not a replica);\n"
             "#   10 virtual patients; default adult. Held-out direction check: donor NK at day 14-21 and CR lower with N-803.\n")
FILES["berrien_elliott2022_n803"] = (
    be_common + "# This file: N-803 10 ug/kg s.c. weekly x3 (days 0, 7, 14; Romee 2018 upper dose, '3 weeks' as in the\n"
    "#   Berrien-Elliott STM 2022 HCT trial) -- assumption.\n# Uses (0.6.0): event kind n803, product ciml.\n" + CONF + "\n"
    + head("berrien_elliott2022_n803", "Berrien-Elliott 2022 (mechanism pair): Hi-Cy/Flu, CIML NK d0, N-803 10 ug/kg weekly x3",
           "Berrien-Elliott 2022 Blood 139:1177 (A: direction only); schedule assumption", -6, 90, "ciml", snaps=(0, 7, 14, 21, 28))
    + hicyflu("assumption: Minnesota Hi-Cy/Flu")
    + ev(0, "nk_infusion", 10e6, "kg-1", "assumption", donor="haplo") + "\n"
    + "".join(ev(d, "n803", 10.0, "ug kg-1", "assumption: 10 ug/kg s.c. weekly x3 (Romee 2018 dose range 1-10)") + "\n"
              for d in (0, 7, 14))
    + patients("ben_", [("all", 10)])
)
FILES["berrien_elliott2022_il2"] = (
    be_common + "# This file: IL-2 1 MIU m-2 s.c. every other day x7 (1.8 MIU flat) -- assumption.\n# Uses (0.6.0): product ciml.\n"
    + CONF + "\n"
    + head("berrien_elliott2022_il2", "Berrien-Elliott 2022 (mechanism pair): Hi-Cy/Flu, CIML NK d0, IL-2 1 MIU/m2 qod x7",
           "Berrien-Elliott 2022 Blood 139:1177 (A: direction only); schedule assumption", -6, 90, "ciml", snaps=(0, 7, 14, 21, 28))
    + hicyflu("assumption: Minnesota Hi-Cy/Flu")
    + ev(0, "nk_infusion", 10e6, "kg-1", "assumption", donor="haplo") + "\n"
    + il2([0, 2, 4, 6, 8, 10, 12], 1.8, "assumption: 1 MIU m-2 every other day x7")
    + patients("bei_", [("all", 10)])
)

# ------------------------------------------------------------------------------------------ tolerant hosts
FILES["bednarski2022_tolerant"] = (
    "# Bednarski et al. 2022, Blood 139:1670: memory-like (CIML) NK from the patient's own HCT donor, with DLI, after\n"
    "# FLAG, for AML relapsed after HCT; 9 children/young adults, 8 evaluable; NO cytokine.\n#\n"
    "# From the paper (A: abstract and Table 3, PMC8931511): fludarabine, cytarabine and filgrastim, NK + DLI '2 weeks\n"
    "#   later' (Table 3: 16-29 days after FLAG, mean 22); 4e6-10e6 NK kg-1; CR at day 28 in 4/8 (MRD-negative), PR 2/8;\n"
    "#   ML NK 'expanded and maintained an ML ... phenotype for > 3 months'; 'persist for months after a single dose\n"
    "#   without exogenous cytokines'.\n"
    "# ASSUMPTIONS: FLAG fludarabine 30 mg m-2 on days -22..-18 (standard FLAG dose; not read); cytarabine, filgrastim\n"
    "#   and the DLI are NOT MODELLED; CIML 10e6 kg-1 (upper dose); the host tolerates the donor (host_tolerant = true:\n"
    "#   no allo-rejection); body 40 kg, 1.3 m2 (children/young adults; not read); blasts drawn (relapsed AML).\n"
    "#   Chimerism observables are not meaningful after HCT (host cells carry the donor's STR): compare donor NK counts.\n"
    "#   Held-out check.\n# Uses (0.6.0): product ciml, protocol field host_tolerant.\n" + CONF + "\n"
    + head("bednarski2022_tolerant", "Bednarski 2022: FLAG (Flu only modelled) d-22..-18, HCT-donor CIML NK d0, no cytokine, tolerant host",
           "Bednarski 2022 Blood 139:1670 (A: abstract, Table 3)", -22, 180, "ciml", assess=(28, 90, 180),
           snaps=(0, 7, 14, 28, 90), tolerant=True)
    + "".join(ev(d, "fludarabine", 30.0, "mg m-2", "assumption: FLAG fludarabine 30 mg m-2 x5 (dose not read)") + "\n"
              for d in (-22, -21, -20, -19, -18))
    + ev(0, "nk_infusion", 10e6, "kg-1", "A: 4e6-10e6 kg-1 (Table 3 footnote); upper dose assumed", donor="hct_donor") + "\n"
    + patients("bed_", [("all", 8)], weight=40.0, bsa=1.3, src="assumption (children and young adults)")
)
FILES["shapiro2022_tolerant"] = (
    "# Shapiro et al. 2022, J Clin Invest 132:e154334: CIML NK from the HCT donor for myeloid relapse after\n"
    "# haploidentical HCT, with IL-2; first 6 patients.\n#\n"
    "# From the paper (A: abstract PMC9151697): 'donor-derived NK cell dose of 5 to 10 million cells/kg after lymphodepleting\n"
    "#   chemotherapy, followed by systemic IL-2 for 7 doses'; 'rapid 10- to 50-fold in vivo expansion that was sustained\n"
    "#   over months'.\n"
    "# ASSUMPTIONS: lymphodepletion = Flu 25 mg m-2 d-6..-2 + Cy 60 mg kg-1 d-5,-4 (not read); IL-2 1 MIU m-2 every other\n"
    "#   day x7 (dose/interval not read); CIML 10e6 kg-1; host tolerant; 6 virtual patients; default adult. 'Fold' of\n"
    "#   what is not in the abstract: compare donor NK/uL at day 28-90 with its day-1 value. Held-out check.\n"
    "# Uses (0.6.0): product ciml, protocol field host_tolerant.\n" + CONF + "\n"
    + head("shapiro2022_tolerant", "Shapiro 2022: Flu/Cy, HCT-donor CIML NK d0, IL-2 x7, tolerant host",
           "Shapiro 2022 J Clin Invest 132:e154334 (A: abstract)", -6, 180, "ciml", assess=(28, 90, 180),
           snaps=(0, 7, 14, 28, 90), tolerant=True)
    + hicyflu("assumption: lymphodepletion not in the stored pages; Minnesota Hi-Cy/Flu")
    + ev(0, "nk_infusion", 10e6, "kg-1", "A: 5e6-10e6 kg-1; upper dose assumed", donor="hct_donor") + "\n"
    + il2([0, 2, 4, 6, 8, 10, 12], 1.8, "A: 7 doses; assumption: 1 MIU m-2 every other day")
    + patients("sha_", [("all", 6)])
)

NEW_FEATURES = ("il2dt", "rhil15_iv", "rhil15_sc", "n803", "ciml", "host_tolerant")


def main(out: Path) -> None:
    """Write every file to ``out`` and report whether today's loader (and the patched one) accepts it."""
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from nksim.errors import NksimInputError
    from nksim.protocol import load_protocol
    for name, text in FILES.items():
        path = out / f"{name}.toml"
        path.write_text(text)
        tomllib.loads(text)  # syntax
        needs_new = any(f in text for f in NEW_FEATURES)
        try:
            p = load_protocol(path)
            status = f"loads today ({len(p.patients)} patients)"
            if needs_new:
                status += "  <-- UNEXPECTED: uses new features"
        except NksimInputError as e:
            status = "refused today (needs new kinds/product/field)" if needs_new else f"ERROR: {e}"
            if needs_new:
                status += "; with the proposed kinds: " + _check_with_new_features(text, out / f"_{name}.toml")
        print(f"{name:32s} {status}")


def _check_with_new_features(text: str, tmp: Path) -> str:
    """Load with the proposed kinds/product patched into today's loader (host_tolerant line removed)."""
    import nksim.protocol as P
    saved = (dict(P.EVENT_UNITS), dict(P.MAX_DOSE), dict(P.NK_PRODUCTS))
    try:
        for k in ("il2dt", "rhil15_iv", "rhil15_sc", "n803"):
            P.EVENT_UNITS[k] = "ug kg-1"
            P.MAX_DOSE[k] = (100.0, "proposed")
        P.NK_PRODUCTS["ciml"] = "proposed"
        tmp.write_text("\n".join(line for line in text.splitlines() if not line.startswith("host_tolerant")))
        p = P.load_protocol(tmp)
        return f"loads ({len(p.patients)} patients, {len(p.events_for(p.patients[0]))} events for the first)"
    except Exception as e:  # noqa: BLE001
        return f"ERROR {e}"
    finally:
        for table, old in zip((P.EVENT_UNITS, P.MAX_DOSE, P.NK_PRODUCTS), saved):
            table.clear()
            table.update(old)
        tmp.unlink(missing_ok=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/i24_protocols"))

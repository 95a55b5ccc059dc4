"""Index layout of the flat arrays passed between Python and the numba kernel.

The kernel receives the model as one float64 vector ``kp`` (indices ``P_*``,
all rates in day-1, times in day, lengths in um), the event list as three
arrays, and returns a daily record ``rec[day, R_*]`` (float64), per-day event
counters ``cnt[day, C_*]`` (int64, region counts) and lattice snapshots.
Module-level ints are compile-time constants for numba.
"""

# ---- kernel parameter vector ---------------------------------------------------
P_SIDE = 0  # lattice side (voxels)
P_K = 1  # voxel capacity (cells)
P_DT = 2  # time step (day)
P_MARROW_EVERY = 3  # marrow update every this many steps
P_STEPS_PER_DAY = 4
P_N_STEPS = 5
P_START_DAY = 6
P_SCALE = 7  # whole-marrow cells per region cell
P_BLOOD_UL = 8  # blood volume (uL)
P_CELLULARITY = 9  # baseline occupancy fraction
P_BLAST_FRAC0 = 10  # baseline blast fraction of nucleated cells
P_SUS_FRAC0 = 11  # baseline NK-susceptible fraction of blasts
P_B_BIRTH = 12  # blast division rate (day-1)
P_B_NET = 13  # blast net growth rate at zero occupancy (day-1)
P_B_SPREAD = 14
P_B_SWITCH = 15
P_B_DRUG = 16  # blast drug sensitivity (relative)
P_N_BIRTH = 17
P_N_NET = 18
P_N_TARGET = 19  # occupancy fraction toward which normals regrow
P_N_SPREAD = 20
P_N_DRUG = 21
P_NK_HOP = 22  # voxel hops per day (all directions)
P_NK_CONTACT = 23  # engagements per day in blast-packed voxel
P_NK_PKILL = 24
P_NK_REFRACT = 25  # day
P_NK_MAXKILLS = 26
P_NK_COMPETENT = 27
P_NK_PROLIF = 28
P_NK_IL15MAX = 29
P_NK_IL15EC50 = 30
P_NK_DEATH = 31
P_NK_REJECT = 32
P_NK_HOME = 33
P_NK_EGRESS = 34
P_NK_TISSUE_IN = 35
P_NK_TISSUE_OUT = 36
P_HNK0 = 37  # host NK baseline (uL-1)
P_HT0 = 38  # host T baseline (uL-1)
P_HREC = 39  # Gompertz regrowth (day-1)
P_IL_MAXFOLD = 40
P_IL_TURNOVER = 41
P_IL_NKW = 42
P_FLU_K = 43  # elimination rate (day-1)
P_FLU_V = 44  # L
P_FLU_EC50 = 45
P_FLU_EMAX = 46
P_CY_K = 47
P_CY_V = 48
P_CY_EC50 = 49
P_CY_EMAX = 50
# early stopping (calibration): stop after a check day at which blasts reach the PD threshold
P_STOP_ENABLED = 51  # 1.0: check at the stop days; 0.0: never stop early
P_PD_REL = 52  # pd_relative_rise / 100
P_PD_ABS = 53  # pd_absolute_rise (percentage points)
P_PD_BELOW = 54  # pd_absolute_below (percent)
P_CR_PCT = 55  # cr_blast_pct: a CR call takes precedence over PD (no stop)
P_PR_PCT = 56  # pr_blast_pct
P_PR_FALL = 57  # pr_min_fall / 100
N_P = 58

# ---- event kinds (see nksim.protocol.EVENT_CODES) --------------------------------
EV_FLU = 0  # amount in mg
EV_CY = 1  # amount in mg
EV_NK = 2  # amount in cells (whole body)

# ---- daily record (float64) -------------------------------------------------------
R_DONOR_NK_BLOOD = 0  # uL-1
R_HOST_NK = 1  # uL-1
R_HOST_T = 2  # uL-1
R_IL15 = 3  # relative to baseline
R_FLU = 4  # mg L-1
R_CY = 5  # mg L-1
R_DONOR_NK_MARROW = 6  # whole-marrow cells
R_DONOR_NK_TISSUE = 7  # cells in other tissues
R_DONOR_NK_AGENTS = 8  # agents in the lattice region
R_BLASTS = 9  # whole-marrow blasts
R_NORMAL = 10  # whole-marrow normal cells
R_BLAST_PCT = 11  # percent of nucleated
R_SUS_FRAC = 12  # susceptible fraction of blasts
R_KILLS = 13  # cumulative kills, whole-marrow estimate
R_EXHAUSTED = 14  # exhausted fraction of competent agents
R_DRUG_HAZARD = 15  # lymphocyte kill hazard (day-1) at record time
N_R = 16

# ---- region event counters (int64, cumulative since start) ------------------------
C_SUS = 0  # current susceptible blasts
C_RES = 1  # current resistant blasts
C_NOR = 2  # current normal cells
C_B_BIRTH = 3
C_B_DEATH = 4  # natural death (incl. crowding-dependent)
C_B_DRUG = 5
C_B_KILLED = 6  # killed by NK
C_B_CROWD = 7  # daughters lost for lack of space
C_N_BIRTH = 8
C_N_DEATH = 9
C_N_DRUG = 10
C_N_CROWD = 11
C_NK_AGENTS = 12  # current agents
C_NK_HOMED = 13
C_NK_EGRESSED = 14
C_NK_BORN = 15
C_NK_DIED = 16
N_C = 17

# ---- snapshot layers --------------------------------------------------------------
S_SUS = 0
S_RES = 1
S_NOR = 2
S_NK = 3
N_S = 4

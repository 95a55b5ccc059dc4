"""Named indices of the arrays passed between Python and the numba kernel.

Derived from the declarations in :mod:`nksim.quantities`, never written by hand:

* ``KP`` -- the kernel parameter vector ``kp`` (float64): ``kp[KP.donor_kill_probability]``;
  slot names are the model-file keys with ``.`` -> ``_``, or the derived inputs' names;
* ``R`` -- the daily record ``rec[day, R.marrow_blast_pct]`` (float64);
* ``C`` -- the region event counters ``cnt[day, C.blasts_killed_by_nk]`` (int64);
* ``S`` -- lattice snapshot layers ``snaps[k, S.lattice_nk]``;
* ``EV`` -- protocol event kinds (``EV.fludarabine`` ...);
* ``Y`` -- the blood ODE state ``y[Y.donor_nk_blood]``.

Each is a named tuple of consecutive ints; numba freezes global tuples into the compiled
code, so ``kp[KP.donor_kill_probability]`` costs the same as a literal index. ``N_*`` give the
lengths. :data:`LAYOUT_DIGEST` identifies the layout; :mod:`nksim.engine.cache_guard` uses it
to discard numba cache files compiled against another layout.
"""
from __future__ import annotations

import hashlib
from collections import namedtuple

from .. import quantities as Q


def _index(name: str, fields: tuple[str, ...]):
    return namedtuple(name, fields)(*range(len(fields)))


KP = _index("KP", Q.KERNEL_SLOTS)
R = _index("R", tuple(v.name for v in Q.RECORD))
C = _index("C", tuple(name for name, _ in Q.COUNTERS))
S = _index("S", tuple(v.name for v in Q.SNAPSHOT_LAYERS))
EV = _index("EV", tuple(k.name for k in Q.EVENT_KINDS))
Y = _index("Y", tuple(name for name, _, _ in Q.BLOOD_STATE))

N_P = len(KP)
N_R = len(R)
N_C = len(C)
N_S = len(S)
N_Y = len(Y)  # with one donor
DONOR_STRIDE = Q.DONOR_STRIDE

#: Digest of every index above: a change means compiled kernels must be rebuilt.
LAYOUT_DIGEST: str = hashlib.sha256(
    repr([(t.__class__.__name__, t._fields) for t in (KP, R, C, S, EV, Y)]).encode()).hexdigest()[:16]


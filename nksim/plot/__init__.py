"""Figures from nksim Datasets (matplotlib, safe with the Agg backend). Each function returns a Figure.

=========================== ====================================================================
``trial_figure(ds)``        multi-panel summary of a cohort run (written by ``nksim run``)
``time_course(ds, ...)``    median and central bands of daily variables over patients x
                            replicates (x draws), protocol events marked; per group/scenario
``swimmer_plot(ds, obs)``   one lane per patient: status known at each day (last response
                            called, PD from progression), censoring; beside it the trial's
                            observed outcomes
``km_plot(data, by=...)``   Kaplan-Meier progression-free curves per scenario (sweep) or dose
                            group (cohort) with censor ticks and a number-at-risk table
``heatmap(summary, ...)``   a sweep-summary outcome over two schedule factors, annotated cells
``contrast_forest(...)``    forest plot of the paired contrasts of each scenario vs its
                            reference, with 95 % confidence intervals (one panel per contrast)
``lattice_snapshot(ds, p)`` the marrow lattice of one patient at its snapshot days, NK agents
                            as dots, scale bar in mm
``prior_posterior(post)``   prior vs ABC-SMC posterior of every fitted parameter
``predictive_check(ppc)``   posterior (and prior) predictive distributions vs the trial
``abc_diagnostics(post)``   epsilon, acceptance rate and ESS per ABC-SMC generation
``screen_figure(morris)``   Morris screen: relative mu* per parameter and output
``recovery_figure(rec)``    parameter recovery: true value vs posterior median and intervals
=========================== ====================================================================

Inputs are the package's own xarray Datasets: ``simulate``/``simulate_cohort`` outputs (dims
``patient``, ``replicate``, ``time`` ...), sweep stores opened with ``nksim.sweep.open_sweep``
(extra dims ``scenario``, ``draw``) and ``nksim.sweep.summarize`` summaries (dim ``scenario``).
Axis labels take ``units`` and ``long_name`` from the variables' attributes. A variable or
coordinate missing from the input raises ``ValueError`` naming it and listing what is available.

When ``ax`` is given the function draws into it (its figure is returned) and leaves the figure
title to the caller; otherwise it creates a figure with a caption-like title (``suptitle``).
Artists carry ``gid`` tags (``median:<var>:<group>``, ``lane:<patient>``,
``observed:<patient>``, ``km:<group>``, ``heatmap:<outcome>``, ``lattice:<var>:<day>``,
``contrast:<contrast>:<scenario>``) so that
tests and scripts can find the plotted data.

Modules: :mod:`~nksim.plot.trial`, :mod:`~nksim.plot.timecourse`, :mod:`~nksim.plot.swimmer`,
:mod:`~nksim.plot.km`, :mod:`~nksim.plot.heatmaps`, :mod:`~nksim.plot.contrasts`, :mod:`~nksim.plot.lattice`,
:mod:`~nksim.plot.calibration`; axis-label tables (short names, log-scale variables, units of
dimensionless variables) in :mod:`~nksim.plot.labels`; colours and the headless (Agg) backend
choice in :mod:`~nksim.plot._style`.
"""
from ._protocol import protocol_schedule
from ._style import FOLLOW_UP_COLOUR, GROUP_COLOURS, LD_COLOUR, NOT_ASSESSED_COLOUR, RESPONSE_COLOURS, TIME_LABEL  # noqa: F401
from .calibration import abc_diagnostics, predictive_check, prior_posterior, recovery_figure, screen_figure
from .contrasts import contrast_forest
from .heatmaps import heatmap
from .km import km_plot
from .labels import LOG_VARIABLES, SHORT_NAMES, axis_label, unit_text  # noqa: F401
from .lattice import LATTICE_LAYERS, lattice_snapshot  # noqa: F401
from .swimmer import swimmer_plot
from .timecourse import TIME_COURSE_VARIABLES, time_course
from .trial import trial_figure

__all__ = ["trial_figure", "time_course", "swimmer_plot", "km_plot", "heatmap", "contrast_forest", "lattice_snapshot",
           "protocol_schedule", "unit_text", "axis_label", "TIME_COURSE_VARIABLES", "RESPONSE_COLOURS",
           "prior_posterior", "predictive_check", "abc_diagnostics", "screen_figure", "recovery_figure"]

"""Optuna study over the paper's Table 1 space: ``run_sweep(cfg) -> DataFrame`` and ``medgan sweep``.

Each trial samples every Table 1 knob that applies to ``--gan`` (``search_space``) with
``trial.suggest_categorical``, trains one run with ``run_training`` into ``<out>/trial-<n>`` with the
chosen metric hook evaluated at the end, and returns that metric (lower is better).

Bad trials never stop the study. A run that diverges (``status.json`` "diverged"), raises (a knob
combination the code refuses, missing VGG weights, ...), or ends with a non-finite metric is recorded with
Optuna state FAIL (the objective returns NaN, which Optuna documents as a failed trial), so TPE samples
only from trials that produced a number and ``best_trial`` is never a broken run; the row keeps
``status`` (finished / diverged / failed / pruned / lost) and ``reason`` so the failures are plotted, not lost.

Many workers, one study: every process given the same ``storage`` (SQLite on one machine, PostgreSQL for
many) and study works on it. ``trials`` is the budget of the whole study: a worker runs trials until the study
holds ``trials`` counted trials, then waits until none is running anywhere. The count is exact under races:
after Optuna hands out a trial, the worker counts the counted trials with a smaller number, and if they already
fill the budget the trial is marked ``surplus`` (user attr), ended FAIL without training, and left out of
every table (see ``study.is_surplus``). Optuna's heartbeat (``heartbeat``/``grace`` seconds) fails a trial
whose worker died (SIGKILL, lost node); ``RetryHeartbeatStaleTrialCallback`` (Optuna's new name of
``RetryFailedTrialCallback``) re-queues it with the same knobs, the next
worker that asks runs it (from scratch, into its own ``trial-<m>``), and the dead trial is shown as status
"lost" and no longer counted. Resuming is running again: raise ``trials`` to extend.

Pruning (``pruner`` median/halving): the trial trains in chunks of ``report_kimg`` with ``resume=True``
(bit-identical to one run), the metric hook runs at the end of each chunk and its value goes to
``trial.report``; a pruned trial keeps its run folder and its last metric (state PRUNED, status "pruned").

Outputs: ``<out>/trials.csv`` (one row per ended trial) and ``<out>/sweep.json`` (the sweep config,
counts per status, the best trial); ``medgan sweep status`` / ``export`` read the storage directly.
``metric_features="inception-random"`` (random-weight Inception, for machines without the weights) is allowed
only when asked for, and then its name is in every row and in ``sweep.json`` so the numbers are never mistaken
for a real FID/KID.
"""

from __future__ import annotations

from medgan.sweep.cli import add_cli, gans_plan, sweep
from medgan.sweep.status import export_trials, study_status
from medgan.sweep.study import (
    SWEEP_FEATURES,
    SWEEP_GANS,
    SWEEP_METRICS,
    SWEEP_PRUNERS,
    SweepConfig,
    counted_trials,
    is_surplus,
    run_sweep,
    search_space,
    trial_config,
    trials_frame,
)

__all__ = ["SWEEP_FEATURES", "SWEEP_GANS", "SWEEP_METRICS", "SWEEP_PRUNERS", "SweepConfig", "add_cli",
           "counted_trials", "export_trials", "gans_plan", "is_surplus", "run_sweep", "search_space", "study_status",
           "sweep", "trial_config", "trials_frame"]

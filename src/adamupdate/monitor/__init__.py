"""A training progress monitor for custom loops, after MATLAB's ``trainingProgressMonitor``.

MATLAB's loop reads::

    monitor = trainingProgressMonitor(Metrics="Loss", Info="Epoch", XLabel="Iteration");
    ...
    recordMetrics(monitor, iteration, Loss=loss);
    updateInfo(monitor, Epoch=epoch + " of " + numEpochs);
    monitor.Progress = 100 * iteration / numIterations;
    ... while ~monitor.Stop

and the Python one::

    with TrainingProgressMonitor(metrics=["Loss"], info=["Epoch"]) as monitor:
        while epoch < num_epochs and not monitor.stop:
            ...
            monitor.record_metrics(iteration, Loss=loss)
            monitor.update_info(Epoch=f"{epoch} of {num_epochs}")
            monitor.progress = 100 * iteration / num_iterations
    monitor.save_plot("training.png")

MATLAB's window becomes the terminal: a live ``rich`` view when the output is a terminal,
plain log lines otherwise (a pipe, a file, CI logs, or ``rich`` not installed); the figure is
saved with :meth:`~TrainingProgressMonitor.save_plot`. MATLAB's *Stop* button becomes Ctrl-C:
inside the ``with`` block the first Ctrl-C sets :attr:`~TrainingProgressMonitor.stop` so the
loop can finish its iteration and save; a second one raises :class:`KeyboardInterrupt`.

The parts, one job each (``rich`` and ``matplotlib`` are imported only when something is
displayed or plotted):

- ``_recorder`` — what the loop reports: metrics, info fields, progress, status, stop flag,
  epoch ends, and the time of this part and of the earlier parts of a resumed run;
- ``_pace`` — the ETA, from the pace of recent iterations, start-up left out;
- ``_text`` — durations, values with units and the one log-line format;
- ``_plain`` / ``_live`` — the renderers for a log and for a terminal;
- ``_figure`` — the plot; ``_files`` — CSV and compact JSON;
- ``_ctrl_c`` — Ctrl-C as the Stop button;
- ``_monitor`` — :class:`TrainingProgressMonitor`, MATLAB's API over those parts.
"""

from ._monitor import TrainingProgressMonitor

__all__ = ["TrainingProgressMonitor"]

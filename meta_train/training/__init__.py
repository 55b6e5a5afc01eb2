"""The outer loop: the pure outer iteration (``outer_step``), the loop around it
(``loop``: logging through ``run_log``, evaluation, ``checkpoint``), a whole run
as one compiled scan for small systems (``scan_loop``), and reading a run's
optimizer back out (``export_run``)."""

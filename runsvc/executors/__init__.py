"""Executors run a claimed run somewhere and report its output and outcome.

The scheduler hands each claimed run to an executor. Today there is one, the local subprocess executor;
remote agents (SPEC §11) will be another implementation of the same interface.
"""

from .base import Executor, Outcome, OutputSink, RunSpec, StopRequest
from .local import LocalExecutor, RunAs

__all__ = ["Executor", "LocalExecutor", "OutputSink", "Outcome", "RunAs", "RunSpec", "StopRequest"]

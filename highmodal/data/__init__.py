"""Tasks, suites, and the registered data sources (package-shipped sets and bring-your-own files)."""

from highmodal.data import archives as archives
from highmodal.data import byo as byo
from highmodal.data import manifest as manifest
from highmodal.data import packaged as packaged
from highmodal.data import real as real
from highmodal.data.loaders import LOADERS, LoadContext, build_suite
from highmodal.tasks import SplitData, Task, TaskData, TaskSuite

__all__ = ["LOADERS", "LoadContext", "SplitData", "Task", "TaskData", "TaskSuite", "build_suite"]

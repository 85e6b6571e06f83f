"""Loaded into the Celery workers of tests/test_cluster_loopback.py (`-i tests.celery_hooks`).

While the file named by WWW_TEST_HOLD_FILE exists (at most 10 minutes), a worker holds each task
it receives before running it, so that the test can kill the worker while a task is surely
inside it."""

import os
import time

from celery.signals import task_prerun


@task_prerun.connect
def hold_task(**_):
    hold = os.environ.get("WWW_TEST_HOLD_FILE")
    end = time.monotonic() + 600
    while hold and os.path.exists(hold) and time.monotonic() < end:
        time.sleep(0.2)

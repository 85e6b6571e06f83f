"""The whole system on one screen: assets by pipeline stage, resources, sensors, schedules, checks."""

import dagster as dg

from www_assets import class_concepts, concepts, evaluation, explanations, probe, world
from www_assets.checks import table_checks
from www_assets.orchestration import (
    automation_sensor, build_refresh_schedule, model_registry_sensor, refresh_stale_job, with_automation,
)
from www_resources.dagster_resources import ParquetIOManager, TorchDevice, WarehouseResource

ASSET_MODULES = [world, probe, concepts, explanations, evaluation, class_concepts]

# every asset gets the one automation policy of www_assets/orchestration.py
assets = with_automation(dg.load_assets_from_modules(ASSET_MODULES))

defs = dg.Definitions(
    assets=assets,
    asset_checks=table_checks(assets),  # built from the tables that have an asset
    sensors=[model_registry_sensor, automation_sensor],  # new registry files -> partitions -> runs
    schedules=[build_refresh_schedule()],  # daily: whatever is missing or stale ($WWW_SCHEDULE_CRON)
    jobs=[refresh_stale_job],
    # one process per run: a fresh process per step would re-import torch for every step, and the
    # "gpu" pool keeps model-heavy steps to one at a time across the concurrent runs anyway
    executor=dg.in_process_executor,
    resources={
        "io_manager": ParquetIOManager(),
        "device": TorchDevice(),
        "warehouse": WarehouseResource(),
    },
)

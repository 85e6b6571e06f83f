"""The whole system on one screen: configuration sources, assets by pipeline stage, resources,
sensors, checks."""

import warnings

import dagster as dg

from www_assets import class_concepts, concepts, evaluation, explanations, hierarchy, localization, probe, world
from www_assets.checks import table_checks
from www_assets.common import with_table_schemas
from www_assets.orchestration import automation_sensor, model_registry_sensor, with_automation
from www_assets.sources import SOURCE_ASSETS, with_sources
from www_resources.dagster_resources import ParquetIOManager, TorchDevice, WarehouseResource

ASSET_MODULES = [world, probe, concepts, explanations, localization, evaluation, class_concepts, hierarchy]

# every asset reads its configuration sources, shows its table's columns, and gets the one
# automation policy of www_assets/orchestration.py
assets = with_automation(with_table_schemas(with_sources(dg.load_assets_from_modules(ASSET_MODULES))))

with warnings.catch_warnings():
    # observable source assets are beta; dagster is pinned in pyproject.toml
    warnings.simplefilter("ignore", dg.BetaWarning)
    defs = dg.Definitions(
        assets=[*SOURCE_ASSETS, *assets],
        asset_checks=table_checks(assets),  # built from the tables that have an asset
        # registry files -> partitions and source observations; the policy -> runs (daily retry inside)
        sensors=[model_registry_sensor, automation_sensor],
        # one process per run: a fresh process per step would re-import torch for every step, and the
        # "gpu" pool keeps model-heavy steps to one at a time across the concurrent runs anyway
        executor=dg.in_process_executor,
        resources={
            "io_manager": ParquetIOManager(),
            "device": TorchDevice(),
            "warehouse": WarehouseResource(),
        },
    )

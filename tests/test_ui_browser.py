"""The Dagster UI in a real browser, the way a user meets it.

Starts `dagster dev` (webserver, daemon, code server) on a free local port with a temp
DAGSTER_HOME (the project's dagster.yaml) and a temp data folder holding a tiny registry: one
untrained torchvision ResNet-18 with 3 classes on an image folder of 3 classes x 4 images
(32 x 32, made here). `WWW_AUTOMATION=off`, so only what the test clicks runs; the registry
sensor still runs and must turn the registry file into the `tiny` partition. Then headless
Chromium opens the asset graph, launches `probe_images` for the `tiny` partition from the asset
page, waits for the run to succeed (and checks the Parquet file it wrote), and opens the
`neuron_concepts` asset page. Screenshots go to the test's temp folder and are copied to
/tmp/www-ui-shots.

Skipped when Chromium (/usr/bin/chromium, or $WWW_CHROMIUM; `apt-get install chromium`) or the
`playwright` package (the `test` extra) is missing. Every process started here is stopped through its
process group.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("WWW_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SHOTS_COPY = Path("/tmp/www-ui-shots")
STARTUP_TIMEOUT_S = 90
RUN_TIMEOUT_S = 90

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser at {CHROMIUM} (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="no playwright package (pip install -e '.[test]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tiny_registry(data: Path) -> None:
    """models/tiny.yaml, concept_sets.yaml, a 3-word concept list and a 3 x 4 image folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("circle", "square", "stripes"):
        folder = data / "probe" / label
        folder.mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (data / "tiny-concepts.txt").write_text("red\nround\nstriped\n")
    (data / "concept_sets.yaml").write_text(yaml.safe_dump({"tiny": f"file:{data / 'tiny-concepts.txt'}"}))
    (data / "models").mkdir()
    entry = {
        "name": "tiny",
        "model": "torchvision:resnet18?weights=none&num_classes=3",
        "layers": ["layer4", "fc"],
        "head": "fc",
        "spatial_layer": "layer4",
        "preprocessing": {"size": 32, "resize": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "probe_set": f"imagefolder:{data / 'probe'}",
        "concept_sets": ["tiny"],
        "clip": "openclip:ViT-B-32?pretrained=openai",
    }
    (data / "models" / "tiny.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after a grace period."""
    for sig, grace in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the leader is gone; make sure its children are too
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


def wait_for_ui(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dagster dev exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the UI did not answer within {STARTUP_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


def wait_for_partition(home: Path, key: str) -> None:
    """The registry sensor's first tick adds the partition (the daemon runs it at start-up)."""
    import dagster as dg

    from www_assets.partitions import models

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            if key in instance.get_dynamic_partitions(models.name):
                return
        finally:
            instance.dispose()
        time.sleep(2)
    raise AssertionError(f"the model_registry sensor did not add partition {key!r} within {STARTUP_TIMEOUT_S}s")


def wait_for_run(home: Path, partition: str) -> str:
    """The status of the first run of `partition` once it has finished (the UI polls the same)."""
    import dagster as dg

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": partition}))
            if runs and runs[-1].is_finished:
                return runs[-1].status.value
        finally:
            instance.dispose()
        time.sleep(2)
    raise AssertionError(f"no finished run of partition {partition!r} within {RUN_TIMEOUT_S}s")


@pytest.fixture
def dagster_dev(tmp_path):
    """(url, data folder, dagster home) of a running `dagster dev` on the tiny registry."""
    data, home = tmp_path / "data", tmp_path / "dagster_home"
    data.mkdir()
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    # the UI's one-time "join the community" dialog counts as seen (it would pop up mid-click)
    (home / ".nux").mkdir()
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    make_tiny_registry(data)
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home), "WWW_DATA_DIR": str(data),
        "WWW_AUTOMATION": "off", "OMP_NUM_THREADS": "1",
    }
    log = tmp_path / "dagster-dev.log"
    dagster = Path(os.environ.get("VIRTUAL_ENV", PROJECT_ROOT / ".venv")) / "bin" / "dagster"
    with open(log, "w") as sink:
        process = subprocess.Popen(
            [str(dagster), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_ui(url, process, log)
        yield url, data, home
    finally:
        stop_group(process)


def test_ui_graph_launch_and_asset_pages(dagster_dev, tmp_path):
    url, data, home = dagster_dev
    wait_for_partition(home, "tiny")
    shots = tmp_path / "shots"
    shots.mkdir()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            # should the community dialog show up anyway, skip it
            page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda button: button.click())

            # 1. the asset graph of the probe stage
            page.goto(f"{url}/locations/www/asset-groups/probe", wait_until="domcontentloaded")
            page.get_by_text("probe_images", exact=True).first.wait_for()
            page.get_by_text("neuron_examples", exact=True).first.wait_for()
            page.screenshot(path=shots / "1-asset-graph.png")

            # 2. materialize probe_images for the tiny partition from its asset page
            page.goto(f"{url}/assets/probe_images", wait_until="domcontentloaded")
            page.get_by_role("button", name="Materialize…").first.click()
            confirm = page.get_by_role("button", name="Confirm")  # upstream world_scenes is not materialized
            confirm.wait_for()
            confirm.click()
            dialog = page.locator("[role=dialog]").last
            dialog.get_by_text("Select a partition or create one").click()
            page.get_by_role("menuitem").filter(has_text="tiny").first.click()
            page.keyboard.press("Escape")
            page.screenshot(path=shots / "2-launch-dialog.png")
            page.get_by_role("button", name="Launch 1 run").click()

            # 3. the run succeeds and wrote the partition's Parquet file; the runs page shows it
            status = wait_for_run(home, "tiny")
            page.goto(f"{url}/runs", wait_until="domcontentloaded")
            page.get_by_text("partition: tiny").first.wait_for()
            page.screenshot(path=shots / "3-runs.png")
            assert status == "SUCCESS", f"the probe_images run ended {status}"
            page.get_by_text("Success", exact=True).first.wait_for()
            parquet = data / "warehouse" / "probe_images" / "model=tiny" / "data.parquet"
            import pandas as pd

            manifest = pd.read_parquet(parquet)
            assert len(manifest) == 12 and manifest["readable"].all()
            assert sorted(manifest["label_name"].unique()) == ["circle", "square", "stripes"]

            # 4. the asset page now shows the materialization; then a neuron's-concepts asset page
            page.goto(f"{url}/assets/probe_images", wait_until="domcontentloaded")
            page.get_by_text("unreadable", exact=True).first.wait_for()  # the run's metadata is shown
            page.screenshot(path=shots / "4-probe-images.png")
            page.goto(f"{url}/assets/neuron_concepts", wait_until="domcontentloaded")
            page.get_by_text("neuron_concepts", exact=True).first.wait_for()
            page.get_by_text("Automation condition").first.wait_for()
            page.screenshot(path=shots / "5-neuron-concepts.png")
        finally:
            browser.close()
            SHOTS_COPY.mkdir(parents=True, exist_ok=True)
            for shot in shots.glob("*.png"):
                shutil.copy(shot, SHOTS_COPY / shot.name)

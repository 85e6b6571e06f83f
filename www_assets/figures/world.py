"""A gallery of world scenes with their object box, part boxes and caption."""

from pathlib import Path

import numpy as np
import pandas as pd

from www_assets.figures import style


def scene_gallery(images: np.ndarray, scenes: pd.DataFrame, parts: pd.DataFrame, path, columns: int = 6,
                  title: str | None = None) -> Path:
    """Draw `images` (N,H,W,3 uint8) in a grid with each scene's object box (white) and part
    boxes (yellow), titled with the class and background; returns the PNG path."""
    from matplotlib.patches import Rectangle

    n = len(images)
    rows = max(1, -(-n // columns))
    side = style.MAX_WIDTH_IN / columns
    fig = style.new_figure(columns * side, rows * (side + 0.35) + 0.5)
    by_image = {k: g for k, g in parts.groupby("image_id")}
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        scene = scenes.iloc[i]
        ax.imshow(images[i], interpolation="nearest")
        ax.add_patch(Rectangle((scene.box_x0 - 0.5, scene.box_y0 - 0.5), scene.box_x1 - scene.box_x0,
                               scene.box_y1 - scene.box_y0, fill=False, edgecolor="white", linewidth=1.2))
        for part in by_image.get(scene.image_id, pd.DataFrame()).itertuples():
            ax.add_patch(Rectangle((part.x0 - 0.5, part.y0 - 0.5), part.x1 - part.x0, part.y1 - part.y0,
                                   fill=False, edgecolor="yellow", linewidth=0.6))
        ax.set_title(f"{scene.label_name}\non {scene.background}", fontsize=style.FONT_MIN)
    fig.suptitle(title or f"the embedded world: {n} scenes, object box white, part boxes yellow",
                 fontsize=style.FONT_TITLE)
    return style.save(fig, path)

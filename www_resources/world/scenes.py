"""The embedded synthetic world: a class hierarchy of objects drawn from named parts.

Every image shows one object of one of 24 classes, drawn from named parts (wheel, window,
roof, petal, eye, fin, ...) in a main colour with a texture, at a random position, scale,
aspect, mirror and shade, on one of 8 backgrounds, behind which up to three small distractor
shapes lie, with Gaussian pixel noise on top. Everything drawn is recorded: the class and
its path in the hierarchy, the object box, one box per part instance, the background, the
colours, the texture and a caption. Because the truth is known, explanation methods can be
scored exactly.

Hierarchy (4 levels, root -> leaf): ``thing -> {artifact, organism} -> superclass -> class``::

    artifact:  vehicle        car, truck, bus, airplane
               building       house, castle, lighthouse, tent
               household item cup, lamp, clock, umbrella
    organism:  land animal    cat, dog, bird, rabbit
               plant          tree, pine, flower, cactus
               sea animal     fish, shark, jellyfish, crab

Ground truth built in on purpose (see `class_table`):

* Confusable pairs that differ by exactly one part, with identical geometry and palettes
  otherwise: car / truck (the truck adds a ``cargo box`` over the rear half) and
  fish / shark (the shark adds a ``dorsal fin``).
* A spurious correlation: ``rabbit`` is drawn on ``snow`` with probability
  `WorldConfig.spurious_share` (default 0.9) in the train and probe splits (otherwise on one
  of the 7 other backgrounds, uniformly); in the test split it is on a uniformly random
  background like every other class. Every other class is on a uniformly random background
  in every split.
* A main colour is never drawn on a background it would vanish into (RGB distance < 100:
  e.g. no green object on grass, no white object on snow), so colour and background are
  slightly dependent; classes also have their own palettes of allowed main colours.

Geometry: each class is a list of parts drawn in order (later parts cover earlier ones); a
part has one or more instances (two wheels, four legs), each a union of primitives
(ellipse, circle, rectangle, convex polygon, thick segment, upper half-ellipse) laid out in a
unit "layout box" that is mapped to pixels. Boxes are computed from the drawn masks, in
integer pixel coordinates with x1 / y1 exclusive. A part box is the box of the instance's
full mask (occlusion by later parts is ignored); the object box is the union of its part
boxes, so every part box lies inside its object box.

Drawing is vectorised with numpy over batches of images: each primitive is a boolean mask
computed from coordinate grids, painted into a per-image palette-index map; backgrounds are
generated per background type over batches. All randomness comes from
`numpy.random.default_rng` seeded by (seed, split[, chunk]), so the same config gives
byte-identical images.

The code lives in three modules: `catalogue` (settings, colours, backgrounds, the classes and
their parts), `sampling` (random scene parameters) and `rendering` (painting, tables, captions);
this module gathers their public names (and the helpers the tests look at) in one place.
"""

from .catalogue import (  # noqa: F401
    BACKGROUND_PHRASES,
    BACKGROUND_RGB,
    BACKGROUNDS,
    CLASS_BY_NAME,
    CLASS_SPECS,
    COLOUR_NAMES,
    COLOURS,
    DISTRACTOR_SHAPES,
    MAX_DISTRACTORS,
    MAX_PARTS,
    MIN_CONTRAST,
    ROOT,
    SPLITS,
    SUBSET_ORDER,
    SUPERCLASS_PARENT,
    SUPERCLASSES,
    TEXTURES,
    ClassSpec,
    PartSpec,
    WorldConfig,
    class_path,
    class_table,
    world_classes,
)
from .rendering import _Layout, _mask_box, caption_for, generate_split, make_gallery  # noqa: F401
from .sampling import WorldSplit  # noqa: F401

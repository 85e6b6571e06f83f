"""The embedded synthetic world: scenes with known ground truth, its vocabulary, and the
small CNN, ViT and CLIP trained on it. Pure code (numpy / torch / timm / open_clip), no Dagster.

Typical use::

    config = WorldConfig.from_dict({"seed": 0})
    train = generate_split(config, "train")            # images, scenes, parts
    model = build_classifier("cnn", len(class_table(config)), config.image_size)
    train_classifier(model, train.images, train.scenes["label"].to_numpy(),
                     epochs=6, batch_size=128, lr=3e-3, seed=0)
    save_classifier(model, model.arch, "world-cnn.pt")
"""

from .clip_checkpoint import (
    CLASSIFIER_FORMAT,
    CLIP_FORMAT,
    load_classifier,
    load_clip_checkpoint,
    save_classifier,
    save_clip_checkpoint,
)
from .models import (
    DEFAULT_CLIP_CONFIG,
    DEFAULT_CNN_ARCH,
    DEFAULT_VIT_ARCH,
    WORLD_MEAN,
    WORLD_STD,
    build_classifier,
    build_world_clip,
    clip_from_config,
    clip_model_config,
    resolve_arch,
    to_model_input,
)
from .scenes import (
    BACKGROUNDS,
    CLASS_SPECS,
    COLOUR_NAMES,
    SPLITS,
    TEXTURES,
    WorldConfig,
    WorldSplit,
    caption_for,
    class_path,
    class_table,
    generate_split,
    make_gallery,
)
from .training import (
    ATTRIBUTES,
    attribute_retrieval_accuracy,
    classifier_accuracy,
    encode_images,
    encode_texts,
    fit_world_clip,
    predict_logits,
    pretrain_clip_image_tower,
    sample_caption,
    train_classifier,
    train_clip,
    warm_start_targets,
    zero_shot_accuracy,
)
from .vocabulary import KINDS, concept_list, distractor_nouns, read_distractor_file, vocabulary

__all__ = [
    "ATTRIBUTES", "BACKGROUNDS", "CLASS_SPECS", "CLASSIFIER_FORMAT", "CLIP_FORMAT", "COLOUR_NAMES",
    "DEFAULT_CLIP_CONFIG", "DEFAULT_CNN_ARCH", "DEFAULT_VIT_ARCH", "KINDS", "SPLITS", "TEXTURES",
    "WORLD_MEAN", "WORLD_STD", "WorldConfig", "WorldSplit", "attribute_retrieval_accuracy",
    "build_classifier", "build_world_clip", "caption_for", "class_path", "class_table",
    "classifier_accuracy", "clip_from_config", "clip_model_config", "concept_list",
    "distractor_nouns", "encode_images", "encode_texts", "fit_world_clip", "generate_split", "load_classifier",
    "load_clip_checkpoint", "make_gallery", "predict_logits", "pretrain_clip_image_tower", "read_distractor_file",
    "resolve_arch", "sample_caption", "save_classifier", "save_clip_checkpoint", "to_model_input",
    "train_classifier", "train_clip", "vocabulary", "warm_start_targets", "zero_shot_accuracy",
]

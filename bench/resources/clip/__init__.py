"""The vision-language model (CLIP) that FALCON and CLIP-Dissect read images and words with: the
interface and loaders (`model`), the embedded model's training (`training`), and the `clip` shared
resource (`factory`). Every public name is importable from here."""
from fexbench.resources.clip.model import (  # noqa: F401
    ClipModel, EOS, PAD, UNK, WordTokenizer, WorldCNN, _SPECIAL, _WORD, _check_images, _image_size, _register_timm_tower, _tensor_preprocess, cached_image_embeddings, load_clip, world_words)
from fexbench.resources.clip.training import (  # noqa: F401
    EmbeddedClipConfig, TrainingPairs, _article, _clip_loss, _partial_captions, _seed, _without_log_record, embedded_clip_id, positives, register_config, train_embedded_clip, training_pairs, zero_shot_accuracy, zero_shot_prompts)
from fexbench.resources.clip.factory import (  # noqa: F401
    _load_clip_cached, factory, load_embedded_checkpoint, load_or_train_embedded, resolve_clip)

"""From audio to the dataset's mel-spectrograms (Essentia, the MTG-Jamendo front end)."""

from mer_models.audio.frontend import (
    AudioError,
    load_audio,
    melspec_file,
    melspectrogram,
)

__all__ = ["AudioError", "load_audio", "melspec_file", "melspectrogram"]

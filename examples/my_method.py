"""A custom condensation method in a dozen lines: per class, the first clip of the IPC longest
training videos.

Use it without touching vdc, from the repository root (so that ``examples`` is importable)::

    # config.yaml
    methods:
      my_method: {module: examples.my_method}
    study:
      methods: [random, my_method]

or copy this file to ``vdc/condense/my_method.py`` and leave out the ``module:`` line. The condense
stage validates what the method returns and writes it; evaluation and tables pick it up by name.
"""
import numpy as np

from vdc.condense import register_method
from vdc.condensed import CondensedSet


@register_method("my_method")
def condense(ctx):
    fr, t_c, interval = ctx.frames, ctx.temporal.t_c, int(ctx.dataset["clip_interval"])
    videos = np.concatenate([ids[np.argsort(-fr.lengths[ids], kind="stable")[:ctx.ipc]]
                             for ids in (fr.class_ids("train", c) for c in range(ctx.num_classes))])
    idx = np.minimum(np.arange(t_c) * interval, fr.lengths[videos, None] - 1)  # first clip (clamped in short videos)
    clips = np.stack([fr.read_frames(v, i) for v, i in zip(videos, idx)])    # uint8 [N, T_c, H, W, 3]
    return CondensedSet(clips, fr.labels[videos], source_video=videos, source_frames=idx)

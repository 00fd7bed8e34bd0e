"""Per-pixel labels of the prepared masks (``masks.npy``) and of the synthetic ground truth.

Both ``talksplat prepare`` and ``talksplat synth`` write these numbers, so a recipe, a metric or a
test can compare them directly. "Left"/"right" are the subject's.
"""

BACKGROUND, TORSO, NECK, HAIR, SKIN, EYE_RIGHT, EYE_LEFT, LIPS, INSIDE_MOUTH = range(9)
LABELS = {BACKGROUND: "background", TORSO: "torso", NECK: "neck", HAIR: "hair", SKIN: "skin",
          EYE_RIGHT: "eye_right", EYE_LEFT: "eye_left", LIPS: "lips", INSIDE_MOUTH: "inside_mouth"}
LABEL_VALUES = {name: value for value, name in LABELS.items()}   # "skin" -> 4

FACE_LABELS = (SKIN, EYE_RIGHT, EYE_LEFT, LIPS)     # the face-mesh surface (mouth opening excluded)
HEAD_LABELS = (HAIR, SKIN, EYE_RIGHT, EYE_LEFT, LIPS, INSIDE_MOUTH)
# What a head model does not draw: it is taken from the source frame (as ER-NeRF/TalkingGaussian
# composite the head over the torso); the neck is drawn by the head model where it overlaps.
BACKDROP_FROM_FRAME = (TORSO, NECK)

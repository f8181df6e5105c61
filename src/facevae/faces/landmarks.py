"""dlib's 68 landmark indices (iBUG 300-W) by group, defined once; numpy only (the audit loads it).

Eyes are named by the subject, as anatomists do: the subject's right eye is on the image's left.
"""

from __future__ import annotations

import numpy as np

BROWS = slice(17, 27)
NOSE_TIP = 30
SUBJECT_RIGHT_EYE = slice(36, 42)  # on the image's left
SUBJECT_LEFT_EYE = slice(42, 48)  # on the image's right
EYES = slice(36, 48)
MOUTH = slice(48, 68)  # outer and inner lip
OUTER_LIP = np.r_[48:60]
RIGID_POINTS = np.r_[27:36, 36, 39, 42, 45]  # nose bridge and base, outer and inner eye corners
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))  # upper and lower inner lip, facing each other
EYELID_PAIRS = ((37, 41), (38, 40), (43, 47), (44, 46))  # upper and lower eyelid, facing each other
MOUTH_CORNERS = (48, 54)
EAR_LEVEL_OUTLINE = (0, 16)  # the face outline's first and last points, beside the ears: rigid to the skull

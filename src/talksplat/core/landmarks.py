"""Index sets of MediaPipe FaceMesh's 478-point mesh (468 surface vertices + 10 iris points).

MediaPipe numbering; "left"/"right" are the subject's. Contours are ordered (they are drawn as
polygons or walked along), so keep the order when using them.
"""

NUM_LANDMARKS = 478             # FaceMesh with refine_landmarks=True (irises included)
NUM_MESH_VERTICES = 468         # the surface mesh; the 10 iris points are not mesh vertices

# Face outline, clockwise in the image starting at the forehead (mediapipe's FACEMESH_FACE_OVAL).
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
JAW = (132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361)   # right to left
NOSE_TIP, CHIN, FOREHEAD = 1, 152, 10
NOSE_BRIDGE = (168, 6, 197, 195, 5, 4, 1)   # between the eyes down to the tip: rigid, tracks head motion
RIGHT_CHEEK, LEFT_CHEEK = 234, 454          # in front of the ears

# Lips. Inner and outer contours, each starting at the right mouth corner.
INNER_LIPS = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
OUTER_LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIP_POINTS = INNER_LIPS + OUTER_LIPS        # the 40 lip points, in this order (sync encoder, LMD)
UPPER_INNER_LIP = (191, 80, 81, 82, 13, 312, 311, 310, 415)   # right to left; pairs with LOWER_INNER_LIP
LOWER_INNER_LIP = (95, 88, 178, 87, 14, 317, 402, 318, 324)
INNER_LIP_PAIRS = tuple(zip(LOWER_INNER_LIP, UPPER_INNER_LIP, strict=True))   # (lower, upper) facing points
UPPER_OUTER_LIP = (185, 40, 39, 37, 0, 267, 269, 270, 409)
LOWER_OUTER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375)
UPPER_LIP_CENTER, LOWER_LIP_CENTER = 13, 14   # the inner-lip midpoints: their distance is the mouth opening
MOUTH_CORNERS = (61, 291)                     # outer contour (right, left)
INNER_MOUTH_CORNERS = (78, 308)

# Eyes.
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263     # outer corners: they do not move when the eyes blink
RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS = (33, 133), (263, 362)   # (outer, inner)
RIGHT_UPPER_LID = (246, 161, 160, 159, 158, 157, 173)          # pairs with RIGHT_LOWER_LID
RIGHT_LOWER_LID = (7, 163, 144, 145, 153, 154, 155)
LEFT_UPPER_LID = (466, 388, 387, 386, 385, 384, 398)
LEFT_LOWER_LID = (249, 390, 373, 374, 380, 381, 382)
RIGHT_IRIS = (468, 469, 470, 471, 472)       # centre first, then the ring
LEFT_IRIS = (473, 474, 475, 476, 477)
RIGHT_IRIS_CENTER, LEFT_IRIS_CENTER = RIGHT_IRIS[0], LEFT_IRIS[0]

# Brows: upper and lower contours, inner end last.
RIGHT_BROW_UPPER, RIGHT_BROW_LOWER = (70, 63, 105, 66, 107), (46, 53, 52, 65, 55)
LEFT_BROW_UPPER, LEFT_BROW_LOWER = (300, 293, 334, 296, 336), (276, 283, 282, 295, 285)
RIGHT_BROW = RIGHT_BROW_UPPER + RIGHT_BROW_LOWER
LEFT_BROW = LEFT_BROW_UPPER + LEFT_BROW_LOWER

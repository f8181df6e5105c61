"""Faces in images: dlib detection and landmarks, alignment to the crop template, tracking between detections,
landmark groups, expression features and mouth occlusion."""

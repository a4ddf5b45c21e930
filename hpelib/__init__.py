"""hpelib: self-supervised learning for fine-grained head pose estimation.

Angle convention: see :mod:`hpelib.angles` (yaw, pitch, roll in degrees,
R = Rz(roll) Ry(yaw) Rx(pitch)).
"""
__version__ = "0.1.0"

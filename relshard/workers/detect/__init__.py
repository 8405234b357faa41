"""Subject detection: OpenCV face and people detectors, NMS, tracks and crops."""

from relshard.workers.detect.subjects import SubjectDetector

__all__ = ["SubjectDetector"]

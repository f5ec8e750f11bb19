"""The keypoint task plugin (:mod:`.task`); mmpose registrations in :mod:`.mm`."""

"""densenas.tasks.detection"""

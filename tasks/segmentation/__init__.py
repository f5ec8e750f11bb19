"""densenas.tasks.segmentation"""

"""densenas.tasks.restoration"""

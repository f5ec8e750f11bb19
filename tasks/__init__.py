"""densenas.tasks"""

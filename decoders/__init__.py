"""densenas.decoders"""

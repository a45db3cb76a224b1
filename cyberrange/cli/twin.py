"""(to be written)"""
COMMANDS = []

from gitsync.cli import main_entry

main_entry()

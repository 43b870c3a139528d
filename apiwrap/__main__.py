from apiwrap.cli import app

app(prog_name="apiwrap")

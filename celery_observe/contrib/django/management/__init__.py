"""Django finds ``manage.py`` commands in an installed app's ``management/commands/``."""

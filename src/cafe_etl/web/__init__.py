"""The dashboard, JSON API and monitoring endpoints (`cafe-etl serve`)."""

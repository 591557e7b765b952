"""The Streamlit dashboard (app.py, served by `tuner dashboard`), installed as `tuner.dashboard`."""

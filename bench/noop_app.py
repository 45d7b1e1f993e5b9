"""The app benchmark nodes load (`shoal node --app noop_app:app`): one task that does nothing."""

from shoal import App

app = App()


@app.task(name="noop", retries=0)
def noop() -> None:
    return None

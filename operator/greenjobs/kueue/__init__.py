"""greenjobs as a Kueue AdmissionCheck controller (`spec.controllerName: greenjobs.dev/carbon`).

decisions.py decides (pure), hints.py reads a job's timing hints, controller.py does the few API
calls, handlers.py holds the thin kopf handlers and main.py is `greenjobs kueue-check`.
"""

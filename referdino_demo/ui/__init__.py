"""User interfaces over the package: the Gradio app (`gradio_app`) and the Jupyter widget panel (`widgets`).

Nothing is imported here, so importing one interface never imports the other's dependencies.
"""

from dcgan.eval.cli import app

app(prog_name="dcgan-eval")

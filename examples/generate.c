/* Generate one image from a prompt with the C API.
 *   cc -Iinclude examples/generate.c -Ltarget/release -lunigrpo -Wl,-rpath,$PWD/target/release -o generate
 *   ./generate models/tiny-shapes "a circle the colour of the sky" out.png */
#include <stdio.h>
#include "unigrpo.h"

static int fail(unigrpo_error *e) {
  fprintf(stderr, "error %u: %s\n", (unsigned)unigrpo_error_code(e), unigrpo_error_message(e));
  unigrpo_error_free(e);
  return 1;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "models/tiny-shapes";
  const char *prompt = argc > 2 ? argv[2] : "a circle the colour of the sky";
  const char *out = argc > 3 ? argv[3] : "generate.png";
  unigrpo_model *model = NULL;
  unigrpo_error *e = unigrpo_model_load(dir, NULL, &model);
  if (e) return fail(e);
  printf("%s on %s\n", unigrpo_version(), unigrpo_model_device(model));

  unigrpo_generate_params p;
  unigrpo_generate_params_init(model, &p);
  p.seed = 7;
  unigrpo_generation *g = NULL;
  if ((e = unigrpo_generate(model, prompt, &p, NULL, &g))) {
    unigrpo_model_free(model);
    return fail(e);
  }
  unigrpo_image img = unigrpo_generation_image(g);
  printf("prompt:    %s\nreasoning: %s\nimage:     %ux%u -> %s\n", prompt, unigrpo_generation_reasoning(g), img.width,
         img.height, out);
  e = unigrpo_image_save_png(&img, out);
  unigrpo_generation_free(g);
  unigrpo_model_free(model);
  return e ? fail(e) : 0;
}

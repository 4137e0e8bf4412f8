"""The seed's on-the-fly dataset, the starting point lazypatch is measured against.

``OnTheFlyPatchDataset`` below is copied verbatim from the seed (the second
example of "How can image data from a dataloader be split into patches?",
2024-12-23): it counts patches per image up front and finds a patch's image
by a linear scan over the images in ``__getitem__``. ``reference.py`` runs it
over an h5py copy of the images. It lives only here, never in the library.
"""

from torch.utils.data import Dataset


class OnTheFlyPatchDataset(Dataset):
    def __init__(self, images, patch_size, stride):
        self.images = images
        self.patch_size = patch_size
        self.stride = stride

        # Pre-compute indices to determine the number of patches without storing them
        self.num_patches_per_img = []
        for img in images:
          h, w, _ = img.shape
          num_patches_h = (h - patch_size) // stride + 1
          num_patches_w = (w - patch_size) // stride + 1
          self.num_patches_per_img.append(num_patches_h * num_patches_w)

        self.total_patches = sum(self.num_patches_per_img)

    def __len__(self):
        return self.total_patches

    def __getitem__(self, idx):
        # Figure out which image and which patch coordinates to extract
        img_index = 0
        while idx >= self.num_patches_per_img[img_index]:
           idx -= self.num_patches_per_img[img_index]
           img_index +=1
        
        img = self.images[img_index]
        h, w, _ = img.shape
        num_patches_w = (w - self.patch_size) // self.stride + 1

        y = (idx // num_patches_w) * self.stride
        x = (idx % num_patches_w) * self.stride

        patch = img[y:y+self.patch_size, x:x+self.patch_size]
        return patch, img_index
